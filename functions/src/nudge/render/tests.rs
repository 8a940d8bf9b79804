//! Rendering: the locale picked along the chain, each placeholder, and the gaps a missing value leaves.

use super::*;
use crate::nudge::default_template;
use crate::nudge::locale::fallback_chain;
use crate::nudge::template::Text;
use crate::NudgeKind;

fn locale(raw: &str) -> Locale {
    Locale::parse(raw).unwrap()
}

fn one(title: &str, body: &str) -> Template {
    let text = Text {
        title: title.into(),
        body: body.into(),
    };
    Template {
        enabled: true,
        texts: [("en".to_owned(), text)].into(),
    }
}

/// The title of a one-locale template rendered with `vars`.
fn title(text: &str, vars: Vars<'_>) -> String {
    render(&one(text, ""), &[Locale::english()], &vars)
        .unwrap()
        .title
}

fn named(name: &str) -> Vars<'_> {
    Vars {
        first_name: Some(name),
        ..Vars::default()
    }
}

#[test]
fn a_spanish_mexican_customer_gets_the_spanish_text_with_their_name() {
    let chain = fallback_chain(Some(&locale("es-MX")), None);
    let vars = Vars {
        first_name: Some("Ana"),
        points: Some(1200),
        segment: "En riesgo",
        discount_code: None,
    };
    let shown = render(&default_template(NudgeKind::AtRisk), &chain, &vars).unwrap();
    assert_eq!(shown.locale.as_str(), "es");
    assert_eq!(shown.dir, "ltr");
    assert_eq!(shown.title, "¡Te echamos de menos, Ana!");
    assert_eq!(
        shown.body,
        "Ha pasado un tiempo. Ven a ver las novedades: tus 1200 puntos siguen aquí."
    );
}

#[test]
fn the_chain_is_followed_to_the_first_locale_with_a_text() {
    let mut template = default_template(NudgeKind::New);
    template.texts.insert(
        "es-MX".into(),
        Text {
            title: "¡Qué onda, {first_name}!".into(),
            body: String::new(),
        },
    );
    let vars = named("Luis");
    let pick = |customer: Option<&str>, shop: Option<&str>| {
        let (customer, shop) = (customer.map(locale), shop.map(locale));
        let chain = fallback_chain(customer.as_ref(), shop.as_ref());
        render(&template, &chain, &vars).unwrap()
    };
    assert_eq!(pick(Some("es-MX"), None).title, "¡Qué onda, Luis!");
    assert_eq!(pick(Some("es-AR"), None).locale.as_str(), "es");
    assert_eq!(pick(Some("it"), Some("fr-CA")).locale.as_str(), "fr");
    assert_eq!(pick(Some("it"), Some("pt")).locale.as_str(), "en");
    assert_eq!(pick(None, None).title, "Welcome, Luis!");
    let arabic = pick(Some("ar-EG"), None);
    assert_eq!((arabic.locale.as_str(), arabic.dir), ("ar", "rtl"));
    assert_eq!(arabic.title, "أهلًا بك، Luis!");
}

#[test]
fn a_disabled_template_renders_nothing() {
    let mut template = default_template(NudgeKind::Loyal);
    template.enabled = false;
    assert_eq!(render(&template, &[Locale::english()], &named("Ana")), None);
}

#[test]
fn a_chain_without_any_text_renders_nothing() {
    let template = one("Hi", "");
    assert_eq!(render(&template, &[locale("de")], &Vars::default()), None);
}

#[test]
fn a_broken_stored_text_is_passed_over() {
    let mut template = one("Hi {first_name}", "");
    let broken = Text {
        title: "Hola {first_name".into(),
        body: String::new(),
    };
    template.texts.insert("es".into(), broken);
    let shown = render(&template, &[locale("es"), Locale::english()], &named("Ana")).unwrap();
    assert_eq!(
        (shown.locale.as_str(), shown.title.as_str()),
        ("en", "Hi Ana")
    );
}

#[test]
fn every_placeholder_is_substituted() {
    let vars = Vars {
        first_name: Some("Ana"),
        points: Some(1_234_567),
        segment: "Champions",
        discount_code: Some("SAVE10"),
    };
    assert_eq!(
        title("{first_name} {points} {segment} {discount_code}", vars),
        "Ana 1,234,567 Champions SAVE10"
    );
}

#[test]
fn a_missing_name_leaves_no_stray_separator() {
    let none = Vars::default();
    for (text, expected) in [
        ("We miss you, {first_name}!", "We miss you!"),
        ("Vous nous manquez, {first_name} !", "Vous nous manquez !"),
        ("اشتقنا إليك، {first_name}!", "اشتقنا إليك!"),
        ("It has been a while, {first_name}", "It has been a while"),
        ("Hola {first_name}, tienes puntos", "Hola, tienes puntos"),
        ("{first_name}, you have points", "You have points"),
        ("{first_name}! Welcome", "Welcome"),
        ("{first_name} welcome back", "Welcome back"),
        ("Thanks {first_name} for shopping", "Thanks for shopping"),
        ("Hi {first_name}.", "Hi."),
        ("{first_name}", ""),
    ] {
        assert_eq!(title(text, none), expected, "{text:?}");
    }
}

#[test]
fn gaps_close_per_line_in_a_body() {
    let template = one(
        "Hi",
        "Hello, {first_name}\n{first_name}, you have {points} points",
    );
    let shown = render(&template, &[Locale::english()], &Vars::default()).unwrap();
    assert_eq!(shown.body, "Hello\nYou have points");
}

#[test]
fn names_are_cleaned_and_cut() {
    assert_eq!(
        title("Hi {first_name}!", named("  Ana \t María ")),
        "Hi Ana María!"
    );
    assert_eq!(title("Hi {first_name}!", named("Ana\u{7}")), "Hi Ana!");
    let long = "a".repeat(MAX_NAME_CHARS + 10);
    let shown = title("{first_name}", named(&long));
    assert_eq!(shown.chars().count(), MAX_NAME_CHARS);
    assert_eq!(
        title("We miss you, {first_name}!", named("   ")),
        "We miss you!"
    );
}

#[test]
fn points_are_grouped_for_the_language() {
    assert_eq!(group_digits(1200, "en"), "1,200");
    assert_eq!(group_digits(999, "en"), "999");
    assert_eq!(group_digits(1200, "de"), "1.200");
    assert_eq!(group_digits(1200, "es"), "1200");
    assert_eq!(group_digits(12_000, "es"), "12.000");
    assert_eq!(group_digits(1_234_567, "fr"), "1\u{202f}234\u{202f}567");
    assert_eq!(group_digits(-4500, "en"), "-4,500");
    assert_eq!(group_digits(i64::MIN, "en"), "-9,223,372,036,854,775,808");
    assert_eq!(group_digits(0, "ar"), "0");
}
