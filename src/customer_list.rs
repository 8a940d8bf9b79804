//! The merchant's customers as Postgres holds them (the owner writes every change there): one page at a time for
//! `GET /api/v1/rfm/customers`, or all of them streamed for `GET /api/v1/rfm/export`.
//!
//! Pages are keyset-paginated: the cursor names the last row's sort value and id, so a page costs the same deep in
//! the list as at its start, and rows that change between two pages are neither repeated nor skipped by their
//! position. An export reads the rows in the list's default order (by id) through one streamed query and a
//! bounded channel, so its memory does not grow with the shop; how many run at once, and for how long, is capped
//! (`gate`), because each holds a pool connection as long as its reader takes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use streams::MerchantId;

use crate::store::{Store, StoreError};

mod export;
mod gate;
pub use export::{export, ExportJob, Format};
pub use gate::{ExportGate, ExportLimits, ExportPermit, Refused};

/// The most rows one page holds.
pub const PAGE: usize = 100;

/// A segment key as the query names it: the shape `functions::config` allows for keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentKey(String);

impl SegmentKey {
    pub fn parse(raw: &str) -> Option<SegmentKey> {
        let ok = !raw.is_empty()
            && raw.len() <= functions::config::MAX_KEY_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        ok.then(|| SegmentKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The orders a list can be read in; ties (and `Id`) by ascending customer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Id,
    /// Highest weighted score first.
    Score,
    /// Highest net spend first.
    Spend,
}

impl Sort {
    pub fn parse(raw: &str) -> Option<Sort> {
        match raw {
            "id" => Some(Sort::Id),
            "score" => Some(Sort::Score),
            "spend" | "net_spend" => Some(Sort::Spend),
            _ => None,
        }
    }

    /// The name a query and a cursor use.
    pub fn name(self) -> &'static str {
        match self {
            Sort::Id => "id",
            Sort::Score => "score",
            Sort::Spend => "spend",
        }
    }

    fn column(self) -> Option<&'static str> {
        match self {
            Sort::Id => None,
            Sort::Score => Some("score"),
            Sort::Spend => Some("net_spend"),
        }
    }
}

/// Where the next page starts: after the row with this sort value (the column's text) and id, in this sort. The
/// sort is part of the cursor because a position means nothing in another order: resuming a score-sorted walk by
/// spend would skip or repeat rows silently, so it is refused instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    sort: Sort,
    value: Option<String>,
    id: i64,
}

impl Cursor {
    /// The sort this cursor continues.
    pub fn sort(&self) -> Sort {
        self.sort
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}|{}|{}",
            self.sort.name(),
            self.value.as_deref().unwrap_or(""),
            self.id
        ))
    }

    /// `None` for anything this build did not hand out (a known sort; the value a decimal number iff the sort has a
    /// column).
    pub fn decode(raw: &str) -> Option<Cursor> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let (sort, rest) = text.split_once('|')?;
        let sort = Sort::parse(sort).filter(|s| s.name() == sort)?;
        let (value, id) = rest.rsplit_once('|')?;
        let value = match (sort.column(), value.is_empty()) {
            (None, true) => None,
            (Some(_), false) => Some(decimal(value)?.to_owned()),
            _ => return None,
        };
        Some(Cursor {
            sort,
            value,
            id: id.parse().ok()?,
        })
    }
}

fn decimal(value: &str) -> Option<&str> {
    let digits = value
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    (digits && value.len() <= 32 && value.parse::<f64>().is_ok()).then_some(value)
}

/// One customer as lists and exports show them: scores, segment and aggregates, no personal data.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Listed {
    pub customer_id: i64,
    pub segment: String,
    pub recency: i16,
    pub frequency: i16,
    pub monetary: i16,
    /// One decimal, as text (`"4.1"`), so it is exact.
    pub score: String,
    pub lifecycle_stage: String,
    pub orders: i32,
    pub net_spend: String,
    pub last_order_at: Option<DateTime<Utc>>,
    pub version: i32,
}

const COLUMNS: &str = "SELECT customer_id, segment, recency, frequency, monetary, score::text AS score, lifecycle_stage,
    orders, net_spend::text AS net_spend, last_order_at, version FROM customers";

/// What a page asks for.
#[derive(Debug, Clone)]
pub struct PageQuery {
    pub segment: Option<SegmentKey>,
    pub sort: Sort,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// One page and the cursor of the next, if there may be one.
pub async fn page(
    store: &Store,
    merchant: &MerchantId,
    query: &PageQuery,
) -> Result<(Vec<Listed>, Option<Cursor>), StoreError> {
    let limit = query.limit.clamp(1, PAGE);
    let (filter, order) = match query.sort.column() {
        None => ("($4::text IS NULL) AND ($3::int8 IS NULL OR customer_id > $3)", "customer_id".to_owned()),
        Some(column) => (
            "($4::text IS NULL OR ({c} < $4::text::numeric OR ({c} = $4::text::numeric AND customer_id > $3)))",
            format!("{column} DESC, customer_id"),
        ),
    };
    let filter = filter.replace("{c}", query.sort.column().unwrap_or_default());
    let sql = format!(
        "{COLUMNS} WHERE merchant_id = $1 AND ($2::text IS NULL OR segment = $2) AND {filter}
         ORDER BY {order} LIMIT $5"
    );
    let after = query.after.as_ref();
    let rows: Vec<Listed> = sqlx::query_as(&sql)
        .bind(merchant.as_str())
        .bind(query.segment.as_ref().map(SegmentKey::as_str))
        .bind(after.map(|c| c.id))
        .bind(after.and_then(|c| c.value.clone()))
        .bind(limit as i64)
        .fetch(store.pool())
        .try_collect()
        .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last())
        .flatten()
        .map(|last| Cursor {
            sort: query.sort,
            value: match query.sort {
                Sort::Id => None,
                Sort::Score => Some(last.score.clone()),
                Sort::Spend => Some(last.net_spend.clone()),
            },
            id: last.customer_id,
        });
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_was_not_handed_out() {
        for cursor in [
            Cursor {
                sort: Sort::Id,
                value: None,
                id: 7,
            },
            Cursor {
                sort: Sort::Score,
                value: Some("4.1".into()),
                id: 9,
            },
            Cursor {
                sort: Sort::Spend,
                value: Some("-12.500".into()),
                id: 1,
            },
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("score|1;drop|2"),
            &URL_SAFE_NO_PAD.encode("score|1.0|x"),
            &URL_SAFE_NO_PAD.encode("1.0|2"),
            &URL_SAFE_NO_PAD.encode("net_spend|1.0|2"),
            &URL_SAFE_NO_PAD.encode("id|1.0|2"),
            &URL_SAFE_NO_PAD.encode("score||2"),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_keys_and_sorts_parse_strictly() {
        assert!(SegmentKey::parse("at_risk").is_some());
        assert!(SegmentKey::parse("At-Risk").is_none());
        assert!(SegmentKey::parse("").is_none());
        assert_eq!(Sort::parse("score"), Some(Sort::Score));
        assert_eq!(Sort::parse("name"), None);
    }
}
