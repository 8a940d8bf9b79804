//! Filling a template in for one customer: pick the text of the best locale, substitute the placeholders, and
//! close the gap a missing value leaves.
//!
//! A value may be missing: a customer with no first name, points not known, and `{discount_code}` until discount
//! codes exist (issue 19). A missing value renders as nothing, and the separator that only made sense next to it
//! goes with it, so `We miss you, {first_name}!` reads `We miss you!` and `{first_name}, you have 5 points` reads
//! `You have 5 points`: never a stray `, ` or a double space.

use crate::nudge::locale::Locale;
use crate::nudge::template::Template;
use crate::nudge::text::{pieces, Piece, Placeholder};

/// A first name longer than this is cut: it is the shopper's own data, shown inside a text that had a length limit.
pub const MAX_NAME_CHARS: usize = 40;

/// What the placeholders stand for, for one customer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    pub first_name: Option<&'a str>,
    pub points: Option<i64>,
    /// The segment's display name in the customer's language (or its key).
    pub segment: &'a str,
    pub discount_code: Option<&'a str>,
}

/// A text ready to show: plain text, to be escaped by whoever displays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The locale whose text was used.
    pub locale: Locale,
    /// `"rtl"` or `"ltr"`, for that locale.
    pub dir: &'static str,
    pub title: String,
    pub body: String,
}

/// The template for the first locale of `chain` that has a usable text; `None` when the template is disabled or
/// no locale of the chain has a text (a stored template always has `en`, and chains end with it).
pub fn render(template: &Template, chain: &[Locale], vars: &Vars<'_>) -> Option<Rendered> {
    if !template.enabled {
        return None;
    }
    template.text_for(chain).find_map(|(locale, text)| {
        let language = locale.language();
        Some(Rendered {
            locale: locale.clone(),
            dir: locale.dir(),
            title: fill(&text.title, vars, language.as_str())?,
            body: fill(&text.body, vars, language.as_str())?,
        })
    })
}

/// The text with its placeholders filled; `None` for a text whose braces do not parse (never one that passed
/// validation, but a stored document is read back without trust).
fn fill(text: &str, vars: &Vars<'_>, language: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut gap = false;
    for piece in pieces(text).ok()? {
        match piece {
            Piece::Literal(literal) => {
                let literal = if gap {
                    close_gap(&mut out, literal)
                } else {
                    literal.to_owned()
                };
                out.push_str(&literal);
                gap = false;
            }
            Piece::Value(placeholder) => {
                let value = value(placeholder, vars, language);
                if value.is_empty() {
                    gap = true;
                } else {
                    out.push_str(&value);
                }
            }
        }
    }
    if gap {
        close_gap(&mut out, "");
    }
    Some(out.trim().to_owned())
}

fn value(placeholder: Placeholder, vars: &Vars<'_>, language: &str) -> String {
    match placeholder {
        Placeholder::FirstName => vars.first_name.map(clean_name).unwrap_or_default(),
        Placeholder::Points => vars
            .points
            .map(|p| group_digits(p, language))
            .unwrap_or_default(),
        Placeholder::Segment => vars.segment.to_owned(),
        Placeholder::DiscountCode => vars.discount_code.unwrap_or_default().trim().to_owned(),
    }
}

/// The name as a word of the text: trimmed, control characters dropped, inner white space single, cut to length.
fn clean_name(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

fn is_space(c: char) -> bool {
    c.is_whitespace() && c != '\n'
}

fn is_comma(c: char) -> bool {
    matches!(c, ',' | '،' | '、' | '，')
}

/// Punctuation that closes onto the word before it.
fn is_closing(c: char) -> bool {
    is_comma(c)
        || matches!(
            c,
            '.' | '!' | '?' | ';' | ':' | '؟' | '؛' | '。' | '！' | '？' | '…'
        )
}

/// Joins what was written before an empty value (`out`) to what follows it (`right`), and returns the part of
/// `right` to append.
fn close_gap(out: &mut String, right: &str) -> String {
    let next = right.trim_start_matches(is_space);
    let before = out.trim_end_matches(is_space);
    let at_line_start = before.is_empty() || before.ends_with('\n');
    let before_len = before.len();
    match next.chars().next() {
        // `Hi, {first_name}` at the end of the text or of a line: the separator before goes.
        None | Some('\n') => {
            trim_separator(out);
            next.to_owned()
        }
        // `{first_name}, you have…`: nothing before to attach the comma to, so it goes, and the line starts
        // with what follows, capitalised.
        Some(c) if is_closing(c) && at_line_start => {
            out.truncate(before_len);
            capitalise(next[c.len_utf8()..].trim_start_matches(is_space))
        }
        // `you, {first_name}!`, `Hola {first_name}, tienes`: the punctuation closes onto the word before.
        Some(c) if is_closing(c) => {
            trim_separator(out);
            right.to_owned()
        }
        Some(_) if at_line_start => {
            out.truncate(before_len);
            capitalise(next)
        }
        // A word follows: one space between the two sides is enough.
        Some(_) if out.ends_with(is_space) => next.to_owned(),
        Some(_) => right.to_owned(),
    }
}

/// Drops the white space and a comma at the end of `out`.
fn trim_separator(out: &mut String) {
    let kept = out.trim_end_matches(is_space);
    let kept = kept
        .strip_suffix(is_comma)
        .unwrap_or(kept)
        .trim_end_matches(is_space);
    out.truncate(kept.len());
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Points with the language's digit grouping: `1,200` in English, `1.200` in German, `1 200` in French (with a
/// narrow no-break space), and Spanish and Polish group only from five digits (`1200`, `12.000`), as CLDR has it.
pub fn group_digits(points: i64, language: &str) -> String {
    let (separator, min_digits) = match language {
        "de" | "it" | "nl" | "pt" | "da" | "id" | "tr" => (".", 4),
        "es" => (".", 5),
        "fr" => ("\u{202f}", 4),
        "pl" => ("\u{a0}", 5),
        "sv" | "nb" | "fi" | "cs" | "ru" | "uk" => ("\u{a0}", 4),
        _ => (",", 4),
    };
    let digits = points.unsigned_abs().to_string();
    let sign = if points < 0 { "-" } else { "" };
    if digits.len() < min_digits {
        return format!("{sign}{digits}");
    }
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push_str(separator);
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}")
}

#[cfg(test)]
mod tests;
