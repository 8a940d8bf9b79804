//! Expected values were computed apart from this code (Python's `math.erfc` and the textbook formulas, and the
//! published 0/50 Wilson bound of 0.0713), not by running it.

use super::*;

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} is not {expected}"
    );
}

#[test]
fn wilson_intervals_match_independent_values() {
    let i = wilson(45, 200).unwrap();
    close(i.low, 0.172_623_697_150_891_26);
    close(i.high, 0.287_741_232_356_605_3);
    let none = wilson(0, 50).unwrap();
    close(none.low, 0.0);
    close(none.high, 0.071_347_599_133_358_72);
    let all = wilson(50, 50).unwrap();
    close(all.low, 0.928_652_400_866_641_4);
    close(all.high, 1.0);
    assert_eq!(wilson(0, 0), None);
}

#[test]
fn the_two_proportion_test_matches_independent_values() {
    let l = lift(45, 200, 20, 180).unwrap();
    close(l.absolute, 0.113_888_888_888_888_9);
    close(l.relative.unwrap(), 1.025);
    close(l.z, 2.943_828_119_890_380_6);
    close(l.p_value, 0.003_241_799_823_193_701);

    let worse = lift(12, 100, 15, 100).unwrap();
    close(worse.relative.unwrap(), -0.2);
    close(worse.z, -0.620_770_855_244_200_8);
    close(worse.p_value, 0.534_750_401_880_279_8);

    let from_nothing = lift(3, 10, 0, 10).unwrap();
    assert_eq!(
        from_nothing.relative, None,
        "no holdout conversions to be relative to"
    );
    close(from_nothing.p_value, 0.060_289_173_990_602_21);
}

#[test]
fn degenerate_comparisons_say_nothing_rather_than_divide_by_zero() {
    assert_eq!(lift(1, 10, 0, 0), None);
    assert_eq!(lift(0, 0, 1, 10), None);
    let same = lift(0, 10, 0, 10).unwrap();
    assert_eq!((same.z, same.p_value), (0.0, 1.0));
    let all = lift(10, 10, 5, 5).unwrap();
    assert_eq!(all.p_value, 1.0);
}

#[test]
fn a_z_of_1_96_is_the_five_percent_level() {
    // 1.96 standard errors apart, two-sided, is p ≈ 0.05 by definition of the quantile.
    close(libm::erfc(Z95 / std::f64::consts::SQRT_2), 0.05);
}

#[test]
fn evaluate_compares_every_arm_with_the_holdout() {
    let arm = |nudged, converted| ArmCounts {
        nudged,
        converted,
        ..ArmCounts::default()
    };
    let holdout = arm(180, 20);
    let (arms, base) = evaluate(&[arm(200, 45), arm(0, 0)], Some(&holdout));
    close(arms[0].rate.unwrap(), 0.225);
    close(arms[0].lift.unwrap().p_value, 0.003_241_799_823_193_701);
    assert_eq!(arms[1].rate, None);
    assert_eq!(arms[1].lift, None);
    let base = base.unwrap();
    assert_eq!(base.lift, None);
    close(base.rate.unwrap(), 20.0 / 180.0);
    let (alone, none) = evaluate(&[arm(200, 45)], None);
    assert_eq!((alone[0].lift, none), (None, None));
}
