//! Writing one shop's coalesced customers: skip what Shopify already has (by version), send the rest in
//! `metafieldsSet` calls of at most 6 customers (24 metafields), record each accepted call's versions at once,
//! and return the customers Shopify refused for good, for the dead-letter topic.
//!
//! Every customer's write is guarded by `compareDigest` on its `rfm_version` metafield (the digest of the version
//! the versions table says Shopify holds), so an older version can never land over a newer one, whichever worker
//! sends it and however late. A `STALE_OBJECT` refusal means another write got there first: the customer's stored
//! version is read back; if it is as new as ours or newer, a newer write won (counted `stale`, recorded, not
//! dead-lettered, not retried); if it is older (the table was behind Shopify: a crash between Shopify's acceptance
//! and the record), the write goes again guarded by the digest just read.
//!
//! `metafieldsSet` is atomic: a call with a refused input writes nothing. The refused customers are taken out and
//! the call sent again for the others; a refusal that names no input is isolated by sending customers one by one.

use std::collections::HashMap;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use sqlx::PgPool;
use streams::MerchantId;

use super::coalesce::Latest;
use super::versions::{self, Known};
use super::SyncError;
use crate::shopify::admin::metafields::{
    set_inputs, set_result, stored_version, version_variables, SetResult, CUSTOMERS_PER_CALL,
    METAFIELDS_SET, VERSION_METAFIELD,
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
    let known = versions::written(pool, shop, &ids).await?;
    write_known(admin, pool, shop, token, customers, &known).await
}

/// Writes `customers` given `known`, what the versions table said Shopify holds when it was read. Apart from
/// `write_shop` so a test can hold on to an old read, as a worker does that loses its partition mid-batch.
pub async fn write_known(
    admin: &PacedClient,
    pool: &PgPool,
    shop: &MerchantId,
    token: &str,
    customers: Vec<Latest>,
    known: &HashMap<u64, Known>,
) -> Result<ShopOutcome, SyncError> {
    let mut outcome = ShopOutcome::default();
    let fresh: Vec<(Latest, Option<String>)> = customers
        .into_iter()
        .filter_map(|l| match known.get(&l.update.customer_id) {
            Some(k) if k.version >= l.update.version => {
                outcome.stale += 1;
                None
            }
            k => Some((l, k.and_then(|k| k.digest.clone()))),
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
        let chunk = done?;
        outcome.written += chunk.written;
        outcome.stale += chunk.superseded;
        outcome.refused.extend(chunk.refused);
    }
    Ok(outcome)
}

/// Calls of one shop sent at once: enough to hide the round trip and the Postgres write behind each other.
pub const CALLS_IN_FLIGHT: usize = 8;

/// How often one customer's write may meet `STALE_OBJECT` with its stored version still older than ours before
/// it is given up as contested and dead-lettered: each such refusal means another write landed in between (or the
/// stored version cannot be read), so an operator should look at that customer.
const MAX_STALE_TRIES: u32 = 5;

struct ChunkDone {
    written: usize,
    superseded: usize,
    refused: Vec<(Latest, String)>,
}

/// One chunk: written, and what Shopify now holds recorded before anything else of it is reported.
async fn write_and_record(
    admin: &PacedClient,
    pool: &PgPool,
    shop: &MerchantId,
    token: &str,
    chunk: &[(Latest, Option<String>)],
) -> Result<ChunkDone, SyncError> {
    let result = write_chunk(admin, shop, token, chunk).await?;
    let id = |i: usize| chunk[i].0.update.customer_id;
    let mut holds: Vec<(u64, u32, Option<String>)> = (result.written.iter())
        .map(|(i, digest)| (id(*i), chunk[*i].0.update.version, digest.clone()))
        .collect();
    let written = holds.len();
    holds.extend(
        (result.superseded.iter())
            .map(|(i, version, digest)| (id(*i), *version, Some(digest.clone()))),
    );
    versions::record(pool, shop, &holds).await?;
    metrics::counter!(WRITES_TOTAL, "outcome" => "written").increment(written as u64);
    metrics::counter!(WRITES_TOTAL, "outcome" => "stale").increment(result.superseded.len() as u64);
    metrics::counter!(WRITES_TOTAL, "outcome" => "refused").increment(result.refused.len() as u64);
    let refused = (result.refused.into_iter())
        .map(|(i, why)| (chunk[i].0.clone(), why))
        .collect();
    Ok(ChunkDone {
        written,
        superseded: result.superseded.len(),
        refused,
    })
}

/// Indexes into a chunk: written (with the new digest), superseded by a newer write (with what Shopify holds),
/// refused (with why).
#[derive(Default)]
struct ChunkResult {
    written: Vec<(usize, Option<String>)>,
    superseded: Vec<(usize, u32, String)>,
    refused: Vec<(usize, String)>,
}

async fn write_chunk(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
    chunk: &[(Latest, Option<String>)],
) -> Result<ChunkResult, SyncError> {
    let mut guards: Vec<Option<String>> = chunk.iter().map(|(_, d)| d.clone()).collect();
    let mut tries = vec![0u32; chunk.len()];
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    let mut one_by_one = false;
    let mut result = ChunkResult::default();
    while !pending.is_empty() {
        let batch: Vec<usize> = pending[..if one_by_one { 1 } else { pending.len() }].to_vec();
        let (resolved, stale) = match send(admin, shop, token, chunk, &guards, &batch).await? {
            SetResult::Written(digests) => {
                result
                    .written
                    .extend(batch.iter().map(|&i| (i, digest_of(&digests, &chunk[i].0))));
                (batch, Vec::new())
            }
            SetResult::Refused { refused, stale } => {
                let refused: Vec<(usize, String)> = refused
                    .into_iter()
                    .map(|(k, why)| (batch[k], why))
                    .collect();
                let stale: Vec<usize> = stale.into_iter().map(|k| batch[k]).collect();
                let resolved = refused
                    .iter()
                    .map(|r| r.0)
                    .chain(stale.iter().copied())
                    .collect();
                result.refused.extend(refused);
                (resolved, stale)
            }
            SetResult::RefusedUnplaced(why) if batch.len() == 1 => {
                result.refused.push((batch[0], why));
                (batch, Vec::new())
            }
            SetResult::RefusedUnplaced(_) => {
                one_by_one = true;
                continue;
            }
        };
        pending.retain(|i| !resolved.contains(i));
        for i in stale {
            match after_stale(admin, shop, token, &chunk[i].0, tries[i]).await? {
                Stale::Superseded(version, digest) => result.superseded.push((i, version, digest)),
                Stale::Again(guard) => {
                    tries[i] += 1;
                    guards[i] = guard;
                    pending.push(i);
                }
                // Not left to chance: Shopify still holds an older version than ours (or one we cannot read),
                // so the write is refused and dead-lettered like any other, where an operator sees it.
                Stale::Contested => result.refused.push((
                    i,
                    "write-back contested: the stored version stayed older than ours after repeated \
                     compare-and-set retries"
                        .to_owned(),
                )),
            }
        }
    }
    Ok(result)
}

/// The new digest of `latest`'s version among a reply's.
fn digest_of(digests: &[(u64, String)], latest: &Latest) -> Option<String> {
    let id = latest.update.customer_id;
    digests
        .iter()
        .find(|(c, _)| *c == id)
        .map(|(_, d)| d.clone())
}

/// What to do about a customer's write Shopify refused with `STALE_OBJECT`.
enum Stale {
    /// Shopify holds this version, as new as ours or newer: a newer write won.
    Superseded(u32, String),
    /// Shopify holds an older version (the table was behind): send ours again, guarded by this digest.
    Again(Option<String>),
    /// Given up after [`MAX_STALE_TRIES`] with Shopify still holding an older (or unreadable) version.
    Contested,
}

async fn after_stale(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
    latest: &Latest,
    tries: u32,
) -> Result<Stale, SyncError> {
    let ours = &latest.update;
    Ok(
        match read_version(admin, shop, token, ours.customer_id).await? {
            Some((version, digest)) if version >= ours.version => {
                Stale::Superseded(version, digest)
            }
            stored if tries < MAX_STALE_TRIES => Stale::Again(stored.map(|(_, digest)| digest)),
            _ => {
                tracing::warn!(merchant = %shop, customer = ours.customer_id,
                "write-back contested: refused after repeated compare-and-set retries");
                Stale::Contested
            }
        },
    )
}

/// The customer's stored version and its digest, read back from Shopify.
async fn read_version(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
    customer: u64,
) -> Result<Option<(u32, String)>, SyncError> {
    let variables = version_variables(customer);
    let reply = admin
        .call(shop.as_str(), token, VERSION_METAFIELD, &variables)
        .await?;
    Ok(stored_version(&reply.data))
}

async fn send(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
    chunk: &[(Latest, Option<String>)],
    guards: &[Option<String>],
    which: &[usize],
) -> Result<SetResult, SyncError> {
    let fields: Vec<_> = (which.iter())
        .map(|&i| chunk[i].0.fields(guards[i].clone()))
        .collect();
    let reply = admin
        .call(shop.as_str(), token, METAFIELDS_SET, &set_inputs(&fields))
        .await?;
    Ok(set_result(&reply.data, &reply.errors, fields.len()))
}
