//! A customer as the engine keeps it: the aggregate, the last published evaluation and its version.
//!
//! The version rises by one each time the published evaluation changes; downstream writes carry it, which is what
//! makes a replayed change recognisable (a row or record for version N already exists).

use crate::aggregate::{CustomerAggregate, Fact};
use crate::config::RfmConfig;
use crate::lifecycle::{lifecycle_stage, LifecycleStage};
use crate::score::{graced, score, Rfm};
use crate::segment::{classify, SegmentId};
use crate::time::Timestamp;

/// What is published about a customer: scores, segment, stage. Three bytes: the scores are kept as one base-5
/// number (every score is 1–5), which keeps a customer's whole state at 40 bytes instead of 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Evaluation {
    /// `(R−1)·25 + (F−1)·5 + (M−1)`.
    rfm_code: u8,
    pub segment: SegmentId,
    pub stage: LifecycleStage,
}

impl Evaluation {
    /// Scores outside 1–5 (which `score` never gives) are clamped into it.
    pub fn new(rfm: Rfm, segment: SegmentId, stage: LifecycleStage) -> Self {
        let digit = |score: u8| score.clamp(1, 5) - 1;
        Evaluation {
            rfm_code: digit(rfm.recency) * 25 + digit(rfm.frequency) * 5 + digit(rfm.monetary),
            segment,
            stage,
        }
    }

    pub fn rfm(&self) -> Rfm {
        let code = self.rfm_code;
        Rfm::new(code / 25 + 1, code / 5 % 5 + 1, code % 5 + 1)
    }

    /// The scores as one number below 125, `(R−1)·25 + (F−1)·5 + (M−1)`: how codecs store them in one byte.
    pub fn rfm_code(&self) -> u8 {
        self.rfm_code
    }

    /// The inverse of [`Evaluation::rfm_code`]; `None` for a code of 125 or more.
    pub fn from_rfm_code(code: u8, segment: SegmentId, stage: LifecycleStage) -> Option<Self> {
        (code < 125).then_some(Evaluation {
            rfm_code: code,
            segment,
            stage,
        })
    }

    /// A customer nobody has scored yet: R1 F1 M1 in the segment that triple maps to.
    pub fn initial(config: &RfmConfig) -> Self {
        let rfm = Rfm::new(1, 1, 1);
        Evaluation::new(
            rfm,
            classify(&config.segments, rfm).unwrap_or(0),
            LifecycleStage::NewLead,
        )
    }
}

/// Evaluates an aggregate at `now`. Pure; the single place scores, segment and stage are derived.
pub fn evaluate(aggregate: &CustomerAggregate, config: &RfmConfig, now: Timestamp) -> Evaluation {
    let rfm = score(aggregate, config, now);
    // A validated table is total; fall back to the last rule rather than panic on one that is not.
    let segment = classify(&config.segments, graced(aggregate, config, now, rfm))
        .unwrap_or_else(|| config.segments.len().saturating_sub(1) as u8);
    let vip = config
        .segments
        .get(usize::from(segment))
        .is_some_and(|r| r.vip);
    let stage = lifecycle_stage(&aggregate.totals(), vip, config, now);
    Evaluation::new(rfm, segment, stage)
}

/// A published change: the customer's evaluation moved from `from` to `to` at `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub version: u32,
    pub from: Evaluation,
    pub to: Evaluation,
}

impl Transition {
    pub fn segment_changed(&self) -> bool {
        self.from.segment != self.to.segment
    }
}

/// Outcome of applying one fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Already applied before: nothing to do, nothing to emit.
    Duplicate,
    /// Applied, but what is published did not change.
    Unchanged,
    Changed(Transition),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerState {
    pub aggregate: CustomerAggregate,
    pub version: u32,
    pub published: Evaluation,
}

impl CustomerState {
    pub fn new(config: &RfmConfig) -> Self {
        CustomerState {
            aggregate: CustomerAggregate::default(),
            version: 0,
            published: Evaluation::initial(config),
        }
    }

    pub fn apply(&mut self, fact: &Fact, config: &RfmConfig, now: Timestamp) -> Update {
        if !self.aggregate.apply(fact) {
            return Update::Duplicate;
        }
        match self.rescore(config, now) {
            Some(t) => Update::Changed(t),
            None => Update::Unchanged,
        }
    }

    /// Re-evaluates without a new fact: a recency boundary passed or the merchant changed the configuration.
    pub fn rescore(&mut self, config: &RfmConfig, now: Timestamp) -> Option<Transition> {
        let next = evaluate(&self.aggregate, config, now);
        if next == self.published {
            return None;
        }
        let from = std::mem::replace(&mut self.published, next);
        self.version += 1;
        Some(Transition {
            version: self.version,
            from,
            to: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_score_triple_survives_the_packing() {
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    let rfm = Rfm::new(r, f, m);
                    let e = Evaluation::new(rfm, 3, LifecycleStage::Vip);
                    assert_eq!((e.rfm(), e.segment, e.stage), (rfm, 3, LifecycleStage::Vip));
                    let decoded = Evaluation::from_rfm_code(e.rfm_code(), 3, LifecycleStage::Vip);
                    assert_eq!(decoded, Some(e));
                }
            }
        }
    }

    #[test]
    fn a_code_past_5_5_5_is_refused() {
        assert_eq!(
            Evaluation::new(Rfm::new(5, 5, 5), 0, LifecycleStage::Vip).rfm_code(),
            124
        );
        assert_eq!(Evaluation::from_rfm_code(125, 0, LifecycleStage::Vip), None);
    }

    #[test]
    fn a_customer_fits_in_40_bytes() {
        // The merchant's hash table holds one per resident customer (plus its 8-byte id): docs/PERFORMANCE.md.
        assert_eq!(std::mem::size_of::<Evaluation>(), 3);
        assert_eq!(std::mem::size_of::<CustomerState>(), 40);
    }
}
