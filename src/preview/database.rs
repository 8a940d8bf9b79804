//! A preview from the customer rows in Postgres, for when no owner answered: each row has the orders, net spend
//! and last order the engine last published, which is all the scores need, except the per-order ages that
//! `recency_decay` weighs (such previews say they are approximate) and the orders since the last publication.

use actors::preview::Preview;
use chrono::{DateTime, Utc};
use functions::score::{frequency_score, monetary_score, recency_score};
use functions::segment::classify;
use functions::{Rfm, RfmConfig, Timestamp};
use futures_util::TryStreamExt;
use streams::MerchantId;

use super::{answer_of, Answer};
use crate::read_model::Source;
use crate::store::{Store, StoreError};

/// One customer row as scoring needs it.
struct Row {
    segment: String,
    orders: i32,
    /// Minor units (two decimals assumed: the rows do not keep the currency's).
    net: i64,
    last_order: Option<DateTime<Utc>>,
}

pub(super) async fn preview(
    store: &Store,
    merchant: &MerchantId,
    proposed: &RfmConfig,
) -> Result<Answer, StoreError> {
    let current = store.load_config(merchant).await?.unwrap_or_default();
    let now = Timestamp::from_unix(Utc::now().timestamp());
    let cols = proposed.segments.len();
    let mut matrix = vec![0u64; current.segments.len() * cols];
    // Streamed: a million rows are never held at once.
    let mut rows = sqlx::query_as::<_, (String, i32, i64, Option<DateTime<Utc>>)>(
        "SELECT segment, orders, round(net_spend * 100)::int8, last_order_at FROM customers WHERE merchant_id = $1",
    )
    .bind(merchant.as_str())
    .fetch(store.pool());
    while let Some((segment, orders, net, last_order)) = rows.try_next().await? {
        let row = Row {
            segment,
            orders,
            net,
            last_order,
        };
        let Some(from) = current.segments.iter().position(|s| s.key == row.segment) else {
            continue;
        };
        let to =
            usize::from(classify(&proposed.segments, graced(&row, proposed, now)).unwrap_or(0));
        matrix[from * cols + to] += 1;
    }
    let preview = Preview::from_matrix(&current, proposed, &matrix);
    Ok(answer_of(
        preview,
        Source::Database,
        proposed.recency_decay.is_some(),
    ))
}

fn scores(row: &Row, config: &RfmConfig, now: Timestamp) -> Rfm {
    let days = row
        .last_order
        .map(|at| now.whole_days_since(Timestamp::from_unix(at.timestamp())));
    Rfm::new(
        recency_score(days, config),
        frequency_score(f64::from(row.orders), config),
        monetary_score(row.net as f64, config),
    )
}

/// As `functions::score::graced`: the scores of `grace_period_days` ago when they weigh more.
fn graced(row: &Row, config: &RfmConfig, now: Timestamp) -> Rfm {
    let today = scores(row, config, now);
    functions::score::graced_by(config, now, today, |at| scores(row, config, at))
}
