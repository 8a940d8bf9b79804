//! Writing one shop's coalesced customers: skip what Shopify already has (by version), send the rest in
//! `metafieldsSet` calls of at most 8 customers (24 metafields), record each accepted call's versions at once,
//! and return the customers Shopify refused for good, for the dead-letter topic.
//!
//! `metafieldsSet` is atomic: a call with a refused input writes nothing. The refused customers are taken out and
//! the call sent again for the others; a refusal that names no input is isolated by sending customers one by one.

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use sqlx::PgPool;
use streams::MerchantId;

use super::coalesce::Latest;
use super::versions;
use super::SyncError;
use crate::shopify::admin::metafields::{
    set_inputs, set_result, SetResult, CUSTOMERS_PER_CALL, METAFIELDS_SET,
};
use crate::shopify::admin::paced::PacedClient;
use crate::shopify::WRITES_TOTAL;

/// What became of one shop's customers.
#[derive(Debug, Default)]
pub struct ShopOutcome {
    pub written: usize,
    pub stale: usize,
    /// Refused for good: the record and Shopify's reason.
    pub refused: Vec<(Latest, String)>,
}

/// Writes `customers` of `shop` with `token`.
pub async fn write_shop(
    admin: &PacedClient,
    pool: &PgPool,
    shop: &MerchantId,
    token: &str,
    customers: Vec<Latest>,
) -> Result<ShopOutcome, SyncError> {
    let ids: Vec<u64> = customers.iter().map(|l| l.update.customer_id).collect();
    let done = versions::written(pool, shop, &ids).await?;
    let mut outcome = ShopOutcome::default();
    let fresh: Vec<Latest> = customers
        .into_iter()
        .filter(|l| {
            let newer = done
                .get(&l.update.customer_id)
                .is_none_or(|&v| l.update.version > v);
            outcome.stale += usize::from(!newer);
            newer
        })
        .collect();
    metrics::counter!(WRITES_TOTAL, "outcome" => "stale").increment(outcome.stale as u64);
    // A customer is in one chunk only, so chunks may be in flight together; the throttle paces them.
    let mut waiting = fresh.chunks(CUSTOMERS_PER_CALL);
    let mut sent = FuturesUnordered::new();
    loop {
        while sent.len() < CALLS_IN_FLIGHT {
            let Some(chunk) = waiting.next() else { break };
            sent.push(write_and_record(admin, pool, shop, token, chunk));
        }
        let Some(done) = sent.next().await else { break };
        let (written, refused) = done?;
        outcome.written += written;
        outcome.refused.extend(refused);
    }
    Ok(outcome)
}

/// Calls of one shop sent at once: enough to hide the round trip and the Postgres write behind each other.
pub const CALLS_IN_FLIGHT: usize = 8;

/// One chunk: written, and the accepted versions recorded before anything else of it is reported.
async fn write_and_record(
    admin: &PacedClient,
    pool: &PgPool,
    shop: &MerchantId,
    token: &str,
    chunk: &[Latest],
) -> Result<(usize, Vec<(Latest, String)>), SyncError> {
    let (written, refused) = write_chunk(admin, shop, token, chunk).await?;
    let accepted: Vec<(u64, u32)> = written
        .iter()
        .map(|&i| (chunk[i].update.customer_id, chunk[i].update.version))
        .collect();
    versions::record(pool, shop, &accepted).await?;
    metrics::counter!(WRITES_TOTAL, "outcome" => "written").increment(accepted.len() as u64);
    metrics::counter!(WRITES_TOTAL, "outcome" => "refused").increment(refused.len() as u64);
    let refused = refused
        .into_iter()
        .map(|(i, why)| (chunk[i].clone(), why))
        .collect();
    Ok((accepted.len(), refused))
}

/// Indexes into `chunk` Shopify wrote, and those it refused with why.
async fn write_chunk(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
    chunk: &[Latest],
) -> Result<(Vec<usize>, Vec<(usize, String)>), SyncError> {
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    let mut refused = Vec::new();
    let mut alone: Vec<usize> = Vec::new();
    while !pending.is_empty() {
        match send(admin, shop, token, chunk, &pending).await? {
            SetResult::Written => break,
            SetResult::Refused(list) => {
                let out: Vec<usize> = list.iter().map(|(i, _)| pending[*i]).collect();
                refused.extend(list.into_iter().map(|(i, why)| (pending[i], why)));
                pending.retain(|i| !out.contains(i));
            }
            SetResult::RefusedUnplaced(why) if pending.len() == 1 => {
                refused.push((pending[0], why));
                pending.clear();
            }
            SetResult::RefusedUnplaced(_) => {
                alone = std::mem::take(&mut pending);
            }
        }
    }
    let mut written = pending;
    for i in alone {
        match send(admin, shop, token, chunk, &[i]).await? {
            SetResult::Written => written.push(i),
            SetResult::Refused(list) => {
                let why = list.into_iter().next().map(|(_, why)| why);
                refused.push((i, why.unwrap_or_default()));
            }
            SetResult::RefusedUnplaced(why) => refused.push((i, why)),
        }
    }
    Ok((written, refused))
}

async fn send(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
    chunk: &[Latest],
    which: &[usize],
) -> Result<SetResult, SyncError> {
    let fields: Vec<_> = which.iter().map(|&i| chunk[i].fields()).collect();
    let reply = admin
        .call(shop.as_str(), token, METAFIELDS_SET, &set_inputs(&fields))
        .await?;
    Ok(set_result(&reply.data, &reply.errors, fields.len()))
}
