//! Reading another loyalty app's customer export: which columns hold the customer and the points balance, per
//! source, and each row checked on its own so one bad row is reported by its line and the rest still count.
//!
//! Smile.io's points CSV has `email` and `points` (its customer export adds more columns, among them the
//! platform's customer id, which we take when present); LoyaltyLion's customer export names the platform's
//! customer id `merchant_id` and the spendable balance `points_approved`. See docs/DECISIONS.md for what was read
//! and what was assumed.

use serde::Serialize;

/// Whose export a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Smile,
    LoyaltyLion,
}

impl Source {
    pub fn parse(raw: &str) -> Option<Source> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "smile" | "smile.io" | "smileio" => Some(Source::Smile),
            "loyaltylion" | "loyalty_lion" | "loyalty-lion" => Some(Source::LoyaltyLion),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Smile => "smile",
            Source::LoyaltyLion => "loyaltylion",
        }
    }

    /// Accepted headers, best first, for the customer's Shopify id, email and points balance.
    fn columns(self) -> [&'static [&'static str]; 3] {
        match self {
            Source::Smile => [
                &[
                    "external_id",
                    "shopify_customer_id",
                    "customer_id",
                    "shopify_id",
                ],
                &["email", "customer_email"],
                &["points", "points_balance", "balance"],
            ],
            Source::LoyaltyLion => [
                &[
                    "merchant_id",
                    "shopify_customer_id",
                    "customer_id",
                    "shopify_id",
                ],
                &["email", "customer_email"],
                &["points_approved", "points", "points_balance"],
            ],
        }
    }
}

/// A usable row: who (by Shopify id or email) and how many points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub shopify_id: Option<u64>,
    pub email: Option<String>,
    pub points: i64,
}

/// A row that cannot be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("the file has no header row")]
    Empty,
    #[error("the header has no {0} column (accepted: {1})")]
    MissingColumn(&'static str, String),
    #[error("the file is not CSV: {0}")]
    Csv(String),
}

/// Every row of the file, usable or not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rows: Vec<Row>,
    /// The first [`MAX_ERRORS`] bad rows; `more_errors` counts the rest.
    pub errors: Vec<RowError>,
    pub more_errors: u64,
}

/// Rows one import takes: far beyond a real 10 MB export of customers, and a bound on what a hostile file of
/// one-character lines costs (the rest of such a file is reported as one error).
pub const MAX_ROWS: usize = 500_000;
/// Bad rows reported one by one; past this they are only counted, so a file of garbage stays a small answer.
pub const MAX_ERRORS: usize = 1_000;

impl Parsed {
    fn fail(&mut self, line: u64, reason: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(RowError { line, reason });
        } else {
            self.more_errors += 1;
        }
    }
}

fn find(headers: &csv::StringRecord, names: &[&str]) -> Option<usize> {
    names.iter().find_map(|name| {
        headers.iter().position(|h| {
            h.trim()
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(name)
        })
    })
}

/// A Shopify customer id as exports write it: a number, or a `gid://shopify/Customer/…` id.
fn shopify_id(raw: &str) -> Result<Option<u64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let digits = raw.strip_prefix("gid://shopify/Customer/").unwrap_or(raw);
    match digits.parse::<u64>() {
        // Cell values are not quoted back: a misaligned column can hold anyone's personal data.
        Ok(0) | Err(_) => Err("the customer id is not a Shopify customer id".to_owned()),
        Ok(id) => Ok(Some(id)),
    }
}

fn points(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("points is empty".into());
    }
    match raw.parse::<i64>() {
        Ok(p) if p < 0 => Err(format!("points {p} is negative; a balance cannot be")),
        Ok(p) if p > 100_000_000 => Err(format!("points {p} is beyond 100,000,000")),
        Ok(p) => Ok(p),
        Err(_) => Err("points is not a whole number (no separators)".to_owned()),
    }
}

fn email(raw: &str) -> Result<Option<String>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let plausible = raw.len() <= 254
        && raw
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if plausible {
        Ok(Some(raw.to_owned()))
    } else {
        Err("the email is not an address".to_owned())
    }
}

/// Reads `body` as `source`'s export. A file-level problem (no header, no points column) refuses the whole file;
/// row problems are collected by line (the header is line 1).
pub fn parse(source: Source, body: &[u8]) -> Result<Parsed, FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| FileError::Csv(e.to_string()))?
        .clone();
    if headers.is_empty() {
        return Err(FileError::Empty);
    }
    let [id_names, email_names, points_names] = source.columns();
    let id_col = find(&headers, id_names);
    let email_col = find(&headers, email_names);
    let points_col = find(&headers, points_names)
        .ok_or_else(|| FileError::MissingColumn("points", points_names.join(", ")))?;
    if id_col.is_none() && email_col.is_none() {
        let accepted = [id_names, email_names].concat().join(", ");
        return Err(FileError::MissingColumn("customer", accepted));
    }
    let mut parsed = Parsed::default();
    for (n, record) in reader.records().enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                parsed.fail(
                    line,
                    "not CSV (a quote or a field count out of place)".to_owned(),
                );
                continue;
            }
        };
        if n >= MAX_ROWS {
            let line = record.position().map_or(0, csv::Position::line);
            parsed.fail(line, format!("more than {MAX_ROWS} rows: split the file; this row and the rest were not read"));
            break;
        }
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |col: Option<usize>| col.and_then(|c| record.get(c)).unwrap_or("");
        let row = (|| {
            let shopify_id = shopify_id(cell(id_col))?;
            let email = email(cell(email_col))?;
            if shopify_id.is_none() && email.is_none() {
                return Err("neither a customer id nor an email".to_owned());
            }
            let points = points(cell(Some(points_col)))?;
            Ok(Row {
                line,
                shopify_id,
                email,
                points,
            })
        })();
        match row {
            Ok(row) => parsed.rows.push(row),
            Err(reason) => parsed.fail(line, reason),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smile_rows_by_email_and_bad_rows_by_line() {
        let file = "email,points\nann@example.com,120\nbob@example.com,12,5\n,30\nnot-an-email,5\ncid@example.com,-3\n";
        let parsed = parse(Source::Smile, file.as_bytes()).unwrap();
        assert_eq!(parsed.rows.len(), 2, "{parsed:?}");
        assert_eq!(
            parsed.rows[0],
            Row {
                line: 2,
                shopify_id: None,
                email: Some("ann@example.com".into()),
                points: 120
            }
        );
        let lines: Vec<u64> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 5, 6]);
        assert!(parsed.errors[2].reason.contains("negative"));
    }

    #[test]
    fn loyaltylion_takes_the_platform_id_and_the_approved_balance() {
        let file = "merchant_id,email,points_approved,points_pending\ngid://shopify/Customer/77,a@b.co,40,10\n";
        let parsed = parse(Source::LoyaltyLion, file.as_bytes()).unwrap();
        assert_eq!(
            (parsed.rows[0].shopify_id, parsed.rows[0].points),
            (Some(77), 40)
        );
    }

    #[test]
    fn a_file_without_points_is_refused_whole() {
        assert!(matches!(
            parse(Source::Smile, b"email,stars\na@b.co,1\n"),
            Err(FileError::MissingColumn("points", _))
        ));
        assert!(parse(Source::Smile, b"").is_err());
    }
}
