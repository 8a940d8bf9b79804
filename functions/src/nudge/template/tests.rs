//! One test per rule: each breaks one thing of a valid template and expects exactly that field to be named.

use serde_json::json;

use super::*;
use crate::nudge::default_template;

fn valid() -> Template {
    default_template(NudgeKind::AtRisk)
}

fn errors(template: &Template) -> Vec<(String, String)> {
    template
        .validate("t")
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect()
}

/// The one field named, asserting there is exactly one error and its message mentions `says`.
fn only_error(template: &Template, says: &str) -> String {
    let found = errors(template);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains(says), "{found:?}");
    found[0].0.clone()
}

fn with_text(locale: &str, title: &str, body: &str) -> Template {
    let mut t = valid();
    let text = Text {
        title: title.into(),
        body: body.into(),
    };
    t.texts.insert(locale.into(), text);
    t
}

#[test]
fn the_defaults_are_valid_even_when_disabled() {
    let mut t = valid();
    assert_eq!(errors(&t), vec![]);
    t.enabled = false;
    assert_eq!(errors(&t), vec![]);
}

#[test]
fn unknown_placeholders_are_refused() {
    let t = with_text("es", "Hola {name}", "");
    assert_eq!(only_error(&t, "{name}"), "t.texts.es.title");
    let t = with_text("es", "Hola", "Tienes {puntos} puntos");
    assert_eq!(only_error(&t, "unknown placeholder"), "t.texts.es.body");
}

#[test]
fn unbalanced_braces_are_refused() {
    let t = with_text("es", "Hola {first_name", "");
    assert_eq!(only_error(&t, "unbalanced"), "t.texts.es.title");
    let t = with_text("es", "Hola", "100} puntos");
    assert_eq!(only_error(&t, "unbalanced"), "t.texts.es.body");
}

#[test]
fn english_is_required_and_others_are_not() {
    let mut t = valid();
    t.texts.remove("en");
    assert_eq!(only_error(&t, "en text is required"), "t.texts");
    let mut t = valid();
    t.texts.retain(|locale, _| locale == "en");
    assert_eq!(errors(&t), vec![]);
}

#[test]
fn an_empty_title_is_refused_in_any_locale() {
    let t = with_text("en", "  ", "body");
    assert_eq!(only_error(&t, "empty"), "t.texts.en.title");
    let t = with_text("de", "", "body");
    assert_eq!(only_error(&t, "empty"), "t.texts.de.title");
    let t = with_text("de", "Titel", "");
    assert_eq!(errors(&t), vec![], "an empty body is allowed");
}

#[test]
fn lengths_count_characters_not_bytes() {
    let arabic_title = "ع".repeat(MAX_TITLE_CHARS);
    assert!(arabic_title.len() > MAX_TITLE_CHARS, "two bytes a letter");
    assert_eq!(errors(&with_text("ar", &arabic_title, "")), vec![]);
    let t = with_text("ar", &format!("{arabic_title}ع"), "");
    assert_eq!(
        only_error(&t, "at most 80 characters (this has 81)"),
        "t.texts.ar.title"
    );
    let body = "ü".repeat(MAX_BODY_CHARS);
    assert_eq!(errors(&with_text("de", "Titel", &body)), vec![]);
    let t = with_text("de", "Titel", &format!("{body}ü"));
    assert_eq!(only_error(&t, "at most 280"), "t.texts.de.body");
}

#[test]
fn markup_is_refused() {
    let t = with_text("en", "<b>Hi</b>", "");
    assert_eq!(only_error(&t, "plain text"), "t.texts.en.title");
    let t = with_text("en", "Hi", "2 > 1");
    assert_eq!(only_error(&t, "plain text"), "t.texts.en.body");
    let t = with_text("en", "Hi & welcome", "\"quoted\" & 'fine'");
    assert_eq!(errors(&t), vec![], "only angle brackets are markup here");
}

#[test]
fn line_breaks_only_in_bodies() {
    let t = with_text("en", "Hi\nthere", "");
    assert_eq!(only_error(&t, "line breaks"), "t.texts.en.title");
    assert_eq!(errors(&with_text("en", "Hi", "one\ntwo")), vec![]);
    let t = with_text("en", "Hi", "bell\u{7}");
    assert_eq!(only_error(&t, "control"), "t.texts.en.body");
}

#[test]
fn invalid_and_non_canonical_locales_are_refused() {
    let t = with_text("english", "Hi", "");
    assert_eq!(only_error(&t, "locale tag"), "t.texts.english");
    let t = with_text("es_MX", "Hola", "");
    assert_eq!(
        only_error(&t, "write this locale as es-MX"),
        "t.texts.es_MX"
    );
    assert_eq!(errors(&with_text("es-MX", "Hola", "")), vec![]);
}

#[test]
fn too_many_locales_are_refused() {
    let mut t = valid();
    for i in 0..MAX_LOCALES {
        let text = Text {
            title: "Hi".into(),
            body: String::new(),
        };
        t.texts.insert(format!("en-x{i}"), text);
    }
    assert_eq!(only_error(&t, "at most 40 locales"), "t.texts");
}

#[test]
fn every_error_is_reported_at_once() {
    let mut t = with_text("es", "<Hola {nombre}", "x".repeat(300).as_str());
    t.texts.remove("en");
    let fields: Vec<_> = errors(&t).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "t.texts",
            "t.texts.es.title",
            "t.texts.es.title",
            "t.texts.es.body"
        ]
    );
}

#[test]
fn an_update_names_kinds_and_reports_paths_from_the_root() {
    let at_risk = serde_json::to_value(valid()).unwrap();
    let update = parse_update(&json!({"templates": {"at_risk": at_risk}, "ignored": 1})).unwrap();
    assert_eq!(
        update.keys().copied().collect::<Vec<_>>(),
        [NudgeKind::AtRisk]
    );

    let bad = json!({"templates": {
        "vip": at_risk,
        "loyal": {"enabled": true},
        "new": {"enabled": true, "texts": {"en": {"title": "Hi {x}"}}},
        "churned": {"enabled": "yes", "texts": {}},
        "inactive": {"enabled": true, "texts": {"en": {"title": "Hi", "subtitle": "no"}}},
    }});
    let fields: Vec<_> = parse_update(&bad)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "templates.churned",
            "templates.inactive",
            "templates.loyal",
            "templates.new.texts.en.title",
            "templates.vip",
        ]
    );
}

#[test]
fn an_update_must_name_something() {
    for document in [
        json!({}),
        json!({"templates": []}),
        json!({"templates": {}}),
        json!(null),
    ] {
        let found = parse_update(&document).unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "templates", "{document}");
    }
}
