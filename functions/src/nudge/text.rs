//! The text of one title or body, read into literal runs and placeholders.
//!
//! Braces only ever delimit placeholders (there is no escape for a literal brace): a merchant's stray `{` is far
//! more likely a typo in a placeholder than a brace meant to be shown, and refusing it at save time is kinder than
//! showing shoppers `{first_name` later.

use std::fmt;

/// A value the renderer fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    FirstName,
    Points,
    Segment,
    DiscountCode,
}

impl Placeholder {
    pub const ALL: [Placeholder; 4] = [
        Placeholder::FirstName,
        Placeholder::Points,
        Placeholder::Segment,
        Placeholder::DiscountCode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::FirstName => "first_name",
            Placeholder::Points => "points",
            Placeholder::Segment => "segment",
            Placeholder::DiscountCode => "discount_code",
        }
    }

    fn parse(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// One run of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Literal(&'a str),
    Value(Placeholder),
}

/// What is wrong with a text's braces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("unknown placeholder {{{0}}}; use {{first_name}}, {{points}}, {{segment}} or {{discount_code}}")]
    Unknown(String),
    #[error("unbalanced braces: every {{ needs a }} and braces only surround placeholders")]
    Unbalanced,
}

/// Splits `text` into literal runs and placeholders; the first error found if the braces are not all placeholders.
pub fn pieces(text: &str) -> Result<Vec<Piece<'_>>, TextError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(TextError::Unbalanced);
        }
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after.find(['{', '}']).ok_or(TextError::Unbalanced)?;
        if after[close..].starts_with('{') {
            return Err(TextError::Unbalanced);
        }
        let name = &after[..close];
        let placeholder =
            Placeholder::parse(name).ok_or_else(|| TextError::Unknown(name.to_owned()))?;
        out.push(Piece::Value(placeholder));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::{Literal, Value};

    #[test]
    fn placeholders_split_the_text() {
        assert_eq!(
            pieces("Hi {first_name}, you have {points} points").unwrap(),
            vec![
                Literal("Hi "),
                Value(Placeholder::FirstName),
                Literal(", you have "),
                Value(Placeholder::Points),
                Literal(" points"),
            ]
        );
        assert_eq!(
            pieces("{segment}{discount_code}").unwrap(),
            vec![
                Value(Placeholder::Segment),
                Value(Placeholder::DiscountCode)
            ]
        );
        assert_eq!(pieces("").unwrap(), vec![]);
        assert_eq!(pieces("plain").unwrap(), vec![Literal("plain")]);
    }

    #[test]
    fn unknown_names_are_reported_by_name() {
        assert_eq!(pieces("Hi {name}"), Err(TextError::Unknown("name".into())));
        assert_eq!(pieces("Hi {}"), Err(TextError::Unknown(String::new())));
        assert_eq!(
            pieces("Hi { first_name }"),
            Err(TextError::Unknown(" first_name ".into()))
        );
        assert_eq!(
            pieces("{FIRST_NAME}"),
            Err(TextError::Unknown("FIRST_NAME".into()))
        );
    }

    #[test]
    fn stray_and_nested_braces_are_unbalanced() {
        for text in [
            "Hi {first_name",
            "Hi first_name}",
            "}{",
            "{{first_name}}",
            "{first_{name}}",
            "a { b",
        ] {
            assert_eq!(pieces(text), Err(TextError::Unbalanced), "{text:?}");
        }
    }
}
