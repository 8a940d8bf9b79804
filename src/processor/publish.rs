//! Publishing what a batch changed: Kafka outputs and Postgres rows, both idempotent by customer version.
//! The caller stores the batch's offsets only after the future from `start` completed, so a crash in between
//! replays the batch and the replay finds its rows already there (Postgres) or its records carrying the same ids
//! (Kafka).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::nudges::NudgeDesk;
use actors::outputs::Record;
use actors::Outcome;
use futures_util::future::join_all;
use streams::sink::EventSink;
use streams::{ProduceError, Topics};
use tokio::sync::oneshot;

use crate::experiments::delivery::settle;
use crate::experiments::ledger::Ledger;
use crate::experiments::NudgeRules;
use crate::gdpr::{write_pii, Gdpr};
use crate::processor::rows_order::RowsOrder;
use crate::score_cache::ScoreCache;
use crate::store::Store;
use crate::widget::relay::{hand_over, NudgeRelay};

#[derive(Clone)]
pub struct Publisher {
    pub sink: EventSink,
    pub topics: Topics,
    pub store: Option<Store>,
    /// `rfm:customer:*` for other services; written last, best effort.
    pub cache: Option<ScoreCache>,
    /// Where fired nudges wait for their shoppers' widgets, offered once their `rfm.task` is acknowledged.
    pub nudges: Option<NudgeDesk>,
    /// Carries the nudges and erasures handed to this desk to the other instances' desks (with Redis).
    pub relay: Option<NudgeRelay>,
    /// Completion of the latest outcome's hand-off to the desk: each waits for the one before, so an erasure can
    /// never reach the desk ahead of an earlier batch's nudge for the same customer (see `start`).
    pub desk_turn: DeskTurn,
    /// Sealed personal data at rest and data-request exports; with the store.
    pub gdpr: Option<Gdpr>,
    /// Start order of outcomes, so erasures and data requests come after every earlier outcome's rows.
    pub rows_order: RowsOrder,
    /// The frequency cap (see `experiments::delivery`); the attribution window is the store's.
    pub nudge_rules: NudgeRules,
    /// Where the fired nudges' fates and the conversions are kept (`experiments::ledger`): Postgres with the
    /// store, memory in the demo without one.
    pub ledger: Option<Ledger>,
}

/// The previous outcome's desk hand-off, for the next one to wait on.
pub type DeskTurn = Arc<Mutex<Option<oneshot::Receiver<()>>>>;

/// The producer of the processor's outputs. `delivery_timeout` is `PROCESSOR_DELIVERY_TIMEOUT_MS`, not the
/// ingress's webhook budget: a record whose acknowledgement is late is retried by librdkafka's idempotent producer,
/// which the broker deduplicates, while one that times out is sent again by `resend` as a new record, which lands
/// twice if the broker had taken the first (a slow broker, or this process starved of CPU while the answer waited
/// in its socket).
pub fn output_sink(
    brokers: &str,
    delivery_timeout: Duration,
    linger: Duration,
) -> streams::SinkConfig {
    streams::SinkConfig {
        linger,
        delivery_timeout,
        ..streams::SinkConfig::new(brokers.to_owned())
    }
}

impl Publisher {
    async fn send(&self, r: &Record) -> Result<(), ProduceError> {
        self.sink.send(r.outgoing(&r.headers())).await.map(drop)
    }

    /// Enqueues the outcome's Kafka records now, in order (unless its actor did), and returns a future that
    /// completes once every record is acknowledged and every row written. Starting several outcomes before awaiting
    /// them pipelines batches while keeping each partition's records in the order they were produced. Each future
    /// hands its nudges to the desk only after the one started before it did, so the futures must all be driven
    /// (spawned, or awaited in start order): one never polled holds up every later one's hand-off.
    pub fn start(&self, mut outcome: Outcome) -> impl std::future::Future<Output = ()> + 'static {
        let records = std::mem::take(&mut outcome.records);
        let deliveries = match outcome.enqueued.take() {
            Some(enqueued) => enqueued.0,
            None => actors::outputs::enqueue(&self.sink, &records).0,
        };
        // Records the producer's local queue refused are sent again after the rest, so they can land after a newer
        // version of the same customer (readers order by version); counted to see whether that happens.
        let refused = deliveries.iter().filter(|d| d.is_none()).count();
        if refused > 0 {
            metrics::counter!(streams::metric_names::OUTPUT_QUEUE_FULL).increment(refused as u64);
        }
        debug_assert_eq!(records.len(), deliveries.len(), "a delivery per record");
        let turn = self.take_turn(&outcome);
        let seq = self.rows_order.begin();
        let this = self.clone();
        let dead_letters = std::mem::take(&mut outcome.rejected);
        async move {
            for letter in &dead_letters {
                letter.deliver(&this.sink, &this.topics.dlq).await;
            }
            let mut failed = Vec::new();
            for (record, delivery) in records.into_iter().zip(deliveries) {
                let delivered = match delivery {
                    Some(d) => matches!(d.await, Ok(Ok(_))),
                    None => false,
                };
                if !delivered {
                    failed.push(record);
                }
            }
            this.resend(failed).await;
            // The cap's verdicts and the `nudges` rows, before the desk sees a nudge.
            settle(this.ledger.as_deref(), this.nudge_rules.cap, &mut outcome).await;
            if let Some(turn) = turn {
                turn.hand_over(&mut outcome);
            }
            this.write_rows(&outcome, seq).await;
            if let Some(ledger) = &this.ledger {
                retry("record conversions", || {
                    ledger.record_conversions(&outcome.changes)
                })
                .await;
            }
            if let Some(cache) = &this.cache {
                cache.apply(&outcome.changes, &outcome.redactions).await;
            }
            this.rows_order.finish(seq);
            metrics::counter!(streams::metric_names::CHANGES)
                .increment(outcome.changes.len() as u64);
            count_segment_entries(&outcome.changes);
        }
    }

    /// This outcome's place in the chain of desk hand-offs, when it has something for the desk. Outcomes complete
    /// out of order (up to 8 are in flight, and one with only erasures has no records to wait for), so the hand-offs
    /// are chained in the order the outcomes started.
    fn take_turn(&self, outcome: &Outcome) -> Option<Turn> {
        let desk = self.nudges.clone()?;
        if outcome.nudges.is_empty() && outcome.redactions.is_empty() {
            return None;
        }
        let (mine, next) = oneshot::channel();
        let previous = self
            .desk_turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replace(next);
        Some(Turn {
            desk,
            relay: self.relay.clone(),
            previous,
            mine,
        })
    }

    /// Resends records until acknowledged. An output that landed but whose acknowledgement was lost becomes a
    /// duplicate with the same event id and version, which consumers discard.
    async fn resend(&self, mut pending: Vec<Record>) {
        let mut delay = Duration::from_millis(50);
        while !pending.is_empty() {
            let results = join_all(pending.iter().map(|r| self.send(r))).await;
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "output not acknowledged; retrying");
                metrics::counter!(streams::metric_names::OUTPUT_RETRIES).increment(1);
                streams::metric_names::error("processor", "output_delivery");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            let mut failed = results.iter().map(Result::is_err);
            pending.retain(|_| failed.next().unwrap_or(false));
        }
    }

    async fn write_rows(&self, outcome: &Outcome, seq: u64) {
        if let Some(store) = &self.store {
            retry("write changes", || store.write_changes(&outcome.changes)).await;
            retry("rewrite published changes", || {
                store.write_changes(&outcome.rewrites)
            })
            .await;
            retry("write sealed personal data", || {
                write_pii(store, &outcome.pii)
            })
            .await;
        }
        if outcome.redactions.is_empty() && outcome.data_requests.is_empty() {
            return;
        }
        // No earlier outcome may write back what this one erases, or miss an export's rows.
        self.rows_order.after_earlier(seq).await;
        // Data requests first: one followed by its customer's erasure in this outcome is erased with them.
        if let Some(gdpr) = &self.gdpr {
            for request in &outcome.data_requests {
                retry("answer data request", || gdpr.answer(request)).await;
            }
        }
        self.erase(outcome).await;
    }

    /// GDPR erasures: Postgres rows, then the score cache, each retried until done; only then is the request
    /// marked complete. (The nudge desk and the dashboards are erased on their own paths.)
    async fn erase(&self, outcome: &Outcome) {
        for (merchant, customer, event_id) in &outcome.redactions {
            if let Some(store) = &self.store {
                retry("redact", || store.redact(merchant, *customer, event_id)).await;
            }
            if let Some(cache) = &self.cache {
                retry("erase score cache", || cache.erase(merchant, *customer)).await;
            }
            if let (Some(ledger), Some(customer)) = (&self.ledger, customer) {
                retry("erase nudge ledger", || ledger.erase(merchant, *customer)).await;
            }
            if let Some(store) = &self.store {
                retry("complete redaction", || {
                    store.complete_request(merchant, event_id)
                })
                .await;
            }
        }
    }
}

/// An outcome's place in the chain of desk hand-offs.
struct Turn {
    desk: NudgeDesk,
    relay: Option<NudgeRelay>,
    previous: Option<oneshot::Receiver<()>>,
    mine: oneshot::Sender<()>,
}

impl Turn {
    /// Hands the outcome's nudges and then its erasures to the desk, on a task of its own so that neither the
    /// outcome's rows nor a tick the loop awaits wait for an earlier outcome (whose acknowledgements an outage may
    /// hold up). Nudges first, so a customer changed and erased in one batch keeps no nudge; before the Postgres
    /// rows, so a widget shows the nudge as soon as its record is durable on Kafka.
    fn hand_over(self, outcome: &mut Outcome) {
        let nudges = std::mem::take(&mut outcome.nudges);
        let erased: Vec<_> = outcome
            .redactions
            .iter()
            .map(|(m, c, _)| (m.clone(), *c))
            .collect();
        tokio::task::spawn_local(async move {
            // A dropped predecessor (its task ended) has nothing left to hand over.
            if let Some(previous) = self.previous {
                let _ = previous.await;
            }
            hand_over(&self.desk, self.relay.as_ref(), nudges, &erased).await;
            let _ = self.mine.send(());
        });
    }
}

/// Retries a write (Postgres rows, or an erasure in Redis) with capped exponential backoff until it succeeds. The
/// consumer is waiting on this, so while the store is down consumption pauses instead of dropping rows.
async fn retry<F, Fut, E>(what: &'static str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(operation = what, error = %e, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
                metrics::counter!(streams::metric_names::STORE_RETRIES).increment(1);
                streams::metric_names::error("processor", "store");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] ProduceError),
    #[error("publishing task failed: {0}")]
    Task(String),
}

/// `rfm_segments_total`: one per published change that moved its customer into another segment.
fn count_segment_entries(changes: &[actors::Change]) {
    static BUILTIN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let builtin = BUILTIN.get_or_init(|| {
        functions::RfmConfig::default()
            .segments
            .into_iter()
            .map(|rule| rule.key)
            .collect()
    });
    let builtin: Vec<&str> = builtin.iter().map(String::as_str).collect();
    for change in changes.iter().filter(|c| c.from_segment != c.to_segment) {
        let label = streams::metric_names::shared_segment_label(&change.to_segment, &builtin);
        metrics::counter!(streams::metric_names::SEGMENT_ENTRIES, "segment" => label).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_broker::MockBroker;
    use actors::customer::{CustomerKey, PendingNudge, DEFAULT_VARIANT};
    use actors::nudges::{DeskStats, NudgeDeskConfig};
    use functions::Timestamp;
    use streams::{MerchantId, SinkConfig};

    /// An erasure's outcome has no records to wait for and completes first; its hand-off must still come after
    /// the earlier outcome's nudge, or the erased customer's nudge would be held again.
    #[actix_web::test]
    async fn an_erasure_reaches_the_desk_after_an_earlier_outcomes_nudge() {
        let topics = Topics::default();
        let broker = crate::mock_broker::MockBroker::start(&topics, 1).unwrap();
        let desk = NudgeDeskConfig::default().build(Arc::new(actors::SystemClock));
        let publisher = Publisher {
            sink: SinkConfig::new(broker.bootstrap_servers()).build().unwrap(),
            topics: topics.clone(),
            store: None,
            cache: None,
            nudges: Some(desk.clone()),
            relay: None,
            desk_turn: DeskTurn::default(),
            gdpr: None,
            rows_order: Default::default(),
            nudge_rules: Default::default(),
            ledger: None,
        };
        let key = CustomerKey {
            merchant: MerchantId::parse("order.myshopify.com").unwrap(),
            customer_id: 5,
        };
        let changed = Outcome {
            records: vec![Record {
                topic: topics.rfm_updated.clone(),
                key: key.merchant.to_string(),
                payload: b"{}".to_vec(),
                trace_id: "t".into(),
                traceparent: None,
            }],
            nudges: vec![PendingNudge {
                key: key.clone(),
                version: 2,
                segment: "loyal".into(),
                kind: functions::NudgeKind::Loyal,
                experiment_id: None,
                variant: DEFAULT_VARIANT.into(),
                locale: None,
                trace_id: "t".into(),
                fired_at: Timestamp(0),
                points: 0,
            }],
            ..Outcome::default()
        };
        let erased = Outcome {
            redactions: vec![(key.merchant.clone(), Some(5), "redact".into())],
            ..Outcome::default()
        };
        let first = tokio::task::spawn_local(publisher.start(changed));
        let second = tokio::task::spawn_local(publisher.start(erased));
        second.await.unwrap();
        first.await.unwrap();
        // The hand-offs run on tasks of their own; wait for both to have reached the desk.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while desk.stats().await
            != (DeskStats {
                offered: 1,
                erasures: 1,
                ..desk.stats().await
            })
        {
            assert!(
                std::time::Instant::now() < deadline,
                "hand-offs never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(desk.current(key).await, None, "the erasure came last");
    }

    fn publisher(sink: EventSink, topics: &Topics) -> Publisher {
        Publisher {
            sink,
            topics: topics.clone(),
            store: None,
            cache: None,
            nudges: None,
            relay: None,
            desk_turn: DeskTurn::default(),
            gdpr: None,
            rows_order: Default::default(),
            nudge_rules: Default::default(),
            ledger: None,
        }
    }

    fn update(topics: &Topics, payload: &str) -> Outcome {
        Outcome {
            records: vec![Record {
                topic: topics.rfm_updated.clone(),
                key: "late.myshopify.com".into(),
                payload: payload.as_bytes().to_vec(),
                trace_id: "t".into(),
                traceparent: None,
            }],
            ..Outcome::default()
        }
    }

    /// A broker that answers later than the ingress's 3 s budget, for a while: each output is still on the topic
    /// once. Sent again after its own timeout, a record the broker had already taken would be there twice under
    /// one customer version (what `recovery::redis_cluster` caught on a busy machine).
    #[actix_web::test]
    async fn an_output_acknowledged_late_is_on_the_topic_once() {
        let topics = Topics::default();
        let broker = MockBroker::start(&topics, 1).unwrap();
        let defaults = crate::configuration::Settings::from_lookup(|var| {
            (var == "SHOPIFY_API_SECRET").then(|| "s".to_owned())
        })
        .unwrap();
        let sink = output_sink(
            &broker.bootstrap_servers(),
            defaults.processor_delivery_timeout,
            defaults.processor_output_linger,
        )
        .build()
        .unwrap();
        let publisher = publisher(sink, &topics);
        // Connected, with a producer id, before the broker slows down: only the record's own answer is late.
        publisher.start(update(&topics, "{\"n\":1}")).await;
        broker.delay_answers(Duration::from_secs(4));
        let slow = tokio::task::spawn_local(publisher.start(update(&topics, "{\"n\":2}")));
        // How long the broker stays slow: past a 3 s timeout, short of the default.
        tokio::time::sleep(Duration::from_secs(5)).await;
        broker.delay_answers(Duration::ZERO);
        slow.await.unwrap();

        let consumer = streams::tail::reader(&broker.bootstrap_servers(), "late-check").unwrap();
        let mut copies = Vec::new();
        streams::tail::read_to_end(
            &consumer,
            &topics.rfm_updated,
            &[(0, 0)].into(),
            Duration::from_secs(10),
            |_, payload| copies.push(String::from_utf8_lossy(payload).into_owned()),
        )
        .unwrap();
        assert_eq!(copies, ["{\"n\":1}", "{\"n\":2}"], "each output once");
    }
}
