//! The churn-risk list from the live state, computed off the partition actor and kept until the merchant changes.
//!
//! The list is the merchant's at-risk customers by net spend, so answering it means a pass over every customer and
//! a sort. Done inside the partition actor, as it first was, 50 dashboards reading a merchant of 200,000 customers
//! held every other merchant of that partition for as long as 50 passes and sorts took. Now the actor only copies
//! out (net spend, id) of the segment's members; the sort runs on a blocking thread, and the ranking is kept per
//! merchant with the merchant's [`Revision`]. While the revision holds, a read costs the actor one page of views;
//! after a change, concurrent reads wait for one computation instead of each making its own. Rankings take 16
//! bytes a member and are bounded in all (see `MAX_RANKED`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::Addr;
use actors::merchant::{MerchantState, Revision};
use actors::{Inspect, PartitionActor, PartitionCore};
use functions::Timestamp;
use streams::MerchantId;

use super::{view, ReadModel, RiskPage, AT_RISK};

/// Members held in all cached rankings (16 bytes each: 32 MB), and merchants ranked.
const MAX_RANKED: usize = 2_000_000;
const MAX_RANKED_MERCHANTS: usize = 256;
/// Rankings shorter than this are sorted where the read runs: a thread hand-off would cost more than the sort.
const INLINE_SORT: usize = 4096;

/// A merchant's at-risk customers as (net spend in minor units, id), highest first (ties: higher id first, as the
/// database orders them), as of `revision`.
#[derive(Debug)]
pub struct Ranking {
    pub revision: Revision,
    pub members: Vec<(i64, u64)>,
}

/// The latest ranking per merchant read recently.
#[derive(Default)]
pub struct Rankings {
    entries: Mutex<HashMap<MerchantId, Arc<Entry>>>,
    ticks: AtomicU64,
    built: AtomicU64,
}

#[derive(Default)]
struct Entry {
    /// Held while a ranking is computed, so concurrent reads wait for it rather than compute their own.
    building: tokio::sync::Mutex<()>,
    latest: Mutex<Option<Arc<Ranking>>>,
    used: AtomicU64,
}

/// What the first look at the owning actor found.
enum Probe {
    /// The cached ranking was current, and here is the page.
    Page(RiskPage),
    /// It was not: a ranking of at least `revision` is needed from the actor of `partition`.
    Stale { partition: i32, revision: Revision },
}

impl Rankings {
    /// Rankings computed so far (each one pass over a merchant's customers on its actor).
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// The merchant's entry, made if `make` (only a computation makes one, so merchants the database answers
    /// for leave nothing here), marked as just read.
    fn entry(&self, merchant: &MerchantId, make: bool) -> Option<Arc<Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match make {
            true => entries.entry(merchant.clone()).or_default().clone(),
            false => entries.get(merchant)?.clone(),
        };
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
        entry.used.store(tick, Ordering::Relaxed);
        Some(entry)
    }

    /// The latest ranking of `merchant`, whatever its revision; `None` while one is being computed.
    fn cached(&self, merchant: &MerchantId) -> Option<Arc<Ranking>> {
        let entry = self.entry(merchant, false)?;
        let _idle = entry.building.try_lock().ok()?;
        let latest = entry.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.clone()
    }

    /// A ranking of revision `seen` or later: the cached one if it is, else one computed by `build` (one
    /// computation at a time per merchant; whoever waited for it takes its result when it is recent enough).
    async fn at_least<F>(
        &self,
        merchant: &MerchantId,
        seen: Revision,
        build: F,
    ) -> Option<Arc<Ranking>>
    where
        F: std::future::Future<Output = Option<Ranking>>,
    {
        let entry = self.entry(merchant, true)?;
        let _building = entry.building.lock().await;
        let latest = entry
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(ranking) = latest.filter(|r| r.revision.covers(seen)) {
            streams::metric_names::cache_lookup("score", true);
            return Some(ranking);
        }
        streams::metric_names::cache_lookup("score", false);
        let ranking = Arc::new(build.await?);
        self.built.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(streams::metric_names::READ_RANKINGS_BUILT).increment(1);
        *entry.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(ranking.clone());
        self.bound();
        Some(ranking)
    }

    /// Forgets the least recently read merchants' rankings until the bounds hold. A reader holding one keeps it.
    fn bound(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let held = |e: &Entry| {
            let latest = e.latest.lock().unwrap_or_else(|p| p.into_inner());
            latest.as_ref().map_or(0, |r| r.members.len())
        };
        let mut ranked: usize = entries.values().map(|e| held(e)).sum();
        while ranked > MAX_RANKED || entries.len() > MAX_RANKED_MERCHANTS {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                .map(|(m, _)| m.clone());
            let Some(entry) = oldest.and_then(|m| entries.remove(&m)) else {
                break;
            };
            ranked -= held(&entry);
        }
    }
}

/// The segment the list shows, if the merchant's rules have it.
fn at_risk_segment(state: &MerchantState) -> Option<usize> {
    state.config.segments.iter().position(|r| r.key == AT_RISK)
}

/// One page of views over `ranking`, built inside the actor: views need the live customers.
fn page(
    core: &PartitionCore,
    merchant: &MerchantId,
    ranking: &Ranking,
    offset: usize,
    limit: usize,
    now: Timestamp,
) -> RiskPage {
    let ids = ranking.members.iter().skip(offset).take(limit);
    RiskPage {
        total: ranking.members.len() as u64,
        customers: ids
            .filter_map(|(_, id)| view(core, merchant, *id, now))
            .collect(),
    }
}

/// Runs inside the actor: the page at once when `cached` is current, else what a ranking must be at least.
fn probe(
    core: &PartitionCore,
    merchant: &MerchantId,
    cached: Option<&Ranking>,
    (offset, limit, now): (usize, usize, Timestamp),
) -> Option<Probe> {
    let state = core.merchant(merchant)?;
    at_risk_segment(state)?;
    let revision = state.revision();
    Some(match cached {
        Some(ranking) if ranking.revision == revision => {
            Probe::Page(page(core, merchant, ranking, offset, limit, now))
        }
        _ => Probe::Stale {
            partition: core.partition,
            revision,
        },
    })
}

/// Copies the members out on the actor, then sorts them off it.
async fn rank(addr: Addr<PartitionActor>, merchant: MerchantId) -> Option<Ranking> {
    let copy = move |core: &PartitionCore| {
        let state = core.merchant(&merchant)?;
        let segment = at_risk_segment(state)?;
        let members: Vec<(i64, u64)> = state
            .customers()
            .filter(|(_, c)| usize::from(c.published.segment) == segment)
            .map(|(id, c)| (c.aggregate.totals().net.minor(), id))
            .collect();
        Some((state.revision(), members))
    };
    let (revision, mut members) = addr.send(Inspect(copy)).await.ok().flatten()?;
    let highest_first = |members: &mut Vec<(i64, u64)>| members.sort_unstable_by(|a, b| b.cmp(a));
    if members.len() < INLINE_SORT {
        highest_first(&mut members);
    } else {
        members = tokio::task::spawn_blocking(move || {
            highest_first(&mut members);
            members
        })
        .await
        .ok()?;
    }
    Some(Ranking { revision, members })
}

impl ReadModel {
    /// A page of the churn-risk list from this instance's live state; `None` when this instance does not hold
    /// the merchant or its rules have no at-risk segment (the database answers then).
    pub(super) async fn live_risk_page(
        &self,
        merchant: &MerchantId,
        offset: usize,
        limit: usize,
        now: Timestamp,
    ) -> Option<RiskPage> {
        let registry = self.registry.as_ref()?;
        let cached = self.rankings.cached(merchant);
        let m = merchant.clone();
        let found = self
            .live(merchant, move |core| {
                probe(core, &m, cached.as_deref(), (offset, limit, now))
            })
            .await?;
        let (partition, seen) = match found {
            Probe::Page(page) => return Some(page),
            Probe::Stale {
                partition,
                revision,
            } => (partition, revision),
        };
        let addr = registry.get(&partition).map(|e| e.value().clone())?;
        let ranking = self
            .rankings
            .at_least(merchant, seen, rank(addr.clone(), merchant.clone()))
            .await?;
        let m = merchant.clone();
        let build = move |core: &PartitionCore| {
            core.merchant(&m)?;
            Some(page(core, &m, &ranking, offset, limit, now))
        };
        addr.send(Inspect(build)).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_model::Source;
    use actix::Actor;
    use actors::{ApplyBatch, Configs, RawRecord};
    use streams::events::OrderCreated;
    use streams::{InputEvent, Topics, SCHEMA_VERSION};

    /// More than `INLINE_SORT`, so the ranking is sorted on a blocking thread.
    const CUSTOMERS: u64 = 5_000;
    const SHOP: &str = "ranked.myshopify.com";

    fn order(shop: &str, customer: u64, cents: u64, now: Timestamp) -> RawRecord {
        let event = InputEvent::OrderCreated(OrderCreated {
            event_id: format!("{shop}-{customer}"),
            schema_version: SCHEMA_VERSION,
            merchant_id: MerchantId::parse(shop).unwrap(),
            customer_id: customer,
            order_id: customer,
            total_price: format!("{}.{:02}", cents / 100, cents % 100),
            currency: "USD".into(),
            // 70 days without an order and one small order: R2 F1 M1, at risk under the default rules.
            created_at: chrono::DateTime::from_timestamp(now.plus_days(-70).unix(), 0).unwrap(),
            financial_status: "paid".into(),
            test: false,
            cancelled: false,
            locale: None,
            pii: None,
        });
        RawRecord {
            kind: Some(event.kind()),
            topic: "orders.create".into(),
            offset: customer as i64,
            key: Some(shop.as_bytes().to_vec()),
            payload: event.encode(),
            timestamp_ms: None,
            traceparent: None,
        }
    }

    /// Three amounts over many customers, so most of the list is ties on net spend.
    fn cents(customer: u64) -> u64 {
        [1_000, 2_000, 3_000][(customer % 3) as usize]
    }

    async fn apply(actor: &Addr<PartitionActor>, records: Vec<RawRecord>, now: Timestamp) {
        let batch = ApplyBatch {
            records,
            now,
            quiet: false,
        };
        let outcome = actor.send(batch).await.unwrap();
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    }

    fn ids(page: &RiskPage) -> Vec<u64> {
        page.customers.iter().map(|c| c.customer_id).collect()
    }

    #[actix_web::test]
    async fn pages_follow_net_spend_then_id_and_concurrent_reads_share_one_ranking() {
        let now = Timestamp::from_unix(chrono::Utc::now().timestamp());
        let actor = PartitionActor::new(0, Configs::default(), Topics::default()).start();
        let mut records: Vec<RawRecord> = (1..=CUSTOMERS)
            .map(|c| order(SHOP, c, cents(c), now))
            .collect();
        records.push(order("other.myshopify.com", 9, 500, now));
        apply(&actor, records, now).await;
        let registry: crate::processor::Registry = Default::default();
        registry.insert(0, actor.clone());
        let model = ReadModel::new(Some(registry), None);
        let shop = MerchantId::parse(SHOP).unwrap();

        let reads = (0..50).map(|_| model.churn_risk(&shop, 0, 200, now));
        let pages = futures_util::future::join_all(reads).await;
        assert_eq!(
            model.rankings.built(),
            1,
            "50 reads of one state, one ranking"
        );
        let first = ids(&pages[0].as_ref().unwrap().1);
        assert!(pages.iter().all(|p| ids(&p.as_ref().unwrap().1) == first));

        let mut expected: Vec<u64> = (1..=CUSTOMERS).collect();
        expected.sort_by_key(|c| std::cmp::Reverse((cents(*c), *c)));
        let mut listed = Vec::new();
        for offset in (0..CUSTOMERS as usize + 200).step_by(200) {
            let (source, page) = model.churn_risk(&shop, offset, 200, now).await.unwrap();
            assert_eq!((source, page.total), (Source::Live, CUSTOMERS));
            listed.extend(ids(&page));
        }
        assert_eq!(listed, expected);
        assert_eq!(model.rankings.built(), 1, "the pages of one state");

        apply(&actor, vec![order(SHOP, CUSTOMERS + 1, 4_500, now)], now).await;
        let (_, page) = model.churn_risk(&shop, 0, 2, now).await.unwrap();
        assert_eq!(
            ids(&page),
            vec![CUSTOMERS + 1, expected[0]],
            "the change is seen"
        );
        assert_eq!((page.total, model.rankings.built()), (CUSTOMERS + 1, 2));
    }

    #[actix_web::test]
    async fn a_read_finds_the_merchant_again_after_its_partition_moves_to_another_actor() {
        let now = Timestamp::from_unix(chrono::Utc::now().timestamp());
        let registry: crate::processor::Registry = Default::default();
        let first = PartitionActor::new(1, Configs::default(), Topics::default()).start();
        let second = PartitionActor::new(2, Configs::default(), Topics::default()).start();
        registry.insert(1, first.clone());
        registry.insert(2, second.clone());
        apply(&first, vec![order(SHOP, 1, 1_000, now)], now).await;
        let model = ReadModel::new(Some(registry.clone()), None);
        let shop = MerchantId::parse(SHOP).unwrap();
        let customers =
            |counts: Vec<super::super::SegmentCount>| counts.iter().map(|c| c.count).sum::<u64>();

        let (source, counts) = model.segments(&shop).await.unwrap();
        assert_eq!((source, customers(counts)), (Source::Live, 1));
        // The remembered actor loses the partition; the merchant's state is now the other actor's.
        registry.remove(&1);
        apply(
            &second,
            vec![order(SHOP, 1, 1_000, now), order(SHOP, 2, 2_000, now)],
            now,
        )
        .await;
        let (source, counts) = model.segments(&shop).await.unwrap();
        assert_eq!((source, customers(counts)), (Source::Live, 2));
        let nowhere = MerchantId::parse("nowhere.myshopify.com").unwrap();
        let (_, counts) = model.segments(&nowhere).await.unwrap();
        assert_eq!(
            customers(counts),
            0,
            "a merchant no actor holds has no live counts"
        );
    }
}
