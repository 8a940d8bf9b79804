//! A stream processor started in-process on fresh topics, a fresh consumer group and a fresh database, with
//! the clock held by the test; shared by the tests of the stream core.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actors::nudges::NudgeDesk;
use actors::ManualClock;
use functions::Timestamp;
use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::processor::{inspect_all, ProcessorStats, Registry};
use loyalnest_rfm::startup::build_processor;
use sqlx::PgPool;
use streams::sink::{EventSink, Outgoing};
use streams::{InputEvent, MerchantId, SinkConfig, Topics};

use crate::helpers::{brokers, eventually, fresh_database, unique};

/// The processor's clock at start.
pub(crate) const T0: i64 = 1_780_000_000;

pub(crate) struct Harness {
    /// `KAFKA_TOPIC_PREFIX` of `topics`, for a binary started on them.
    pub(crate) prefix: String,
    pub(crate) topics: Topics,
    pub(crate) sink: EventSink,
    pub(crate) db: PgPool,
    pub(crate) db_url: String,
    pub(crate) clock: ManualClock,
    pub(crate) stats: Arc<ProcessorStats>,
    pub(crate) registry: Registry,
    pub(crate) nudges: NudgeDesk,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A processor on fresh topics with `partitions` partitions each, a fresh group and a fresh database.
pub(crate) async fn start_processor(partitions: i32) -> Harness {
    crate::helpers::init_test_logs();
    let prefix = format!("{}.", unique("p"));
    let db_url = fresh_database().await;
    let env: HashMap<&str, String> = HashMap::from([
        ("SHOPIFY_API_SECRET", "s".to_owned()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("KAFKA_GROUP_ID", unique("g-")),
        ("DATABASE_URL", db_url.clone()),
    ]);
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    streams::admin::ensure_topics(&settings.kafka_brokers, &settings.topics, partitions, 1)
        .await
        .unwrap();
    let clock = ManualClock::new(Timestamp(T0));
    let processor = build_processor(&settings, Arc::new(clock.clone()))
        .await
        .expect("processor builds");
    let stats = processor.stats();
    let registry = processor.registry();
    let nudges = processor
        .nudges()
        .expect("the processor holds nudges for widgets");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    actix_web::rt::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    Harness {
        prefix,
        topics: settings.topics.clone(),
        sink: SinkConfig::new(settings.kafka_brokers.clone())
            .build()
            .unwrap(),
        db: PgPool::connect(&db_url).await.unwrap(),
        db_url,
        clock,
        stats,
        registry,
        nudges,
        _stop: stop,
    }
}

impl Harness {
    /// The customer's segment as Postgres holds it, if it has a row.
    pub(crate) async fn segment_of(
        &self,
        merchant: &MerchantId,
        customer_id: i64,
    ) -> Option<String> {
        sqlx::query_scalar(
            "SELECT segment FROM customers WHERE merchant_id = $1 AND customer_id = $2",
        )
        .bind(merchant.as_str())
        .bind(customer_id)
        .fetch_optional(&self.db)
        .await
        .expect("postgres answers")
    }

    pub(crate) async fn produce(&self, events: &[InputEvent]) {
        for e in events {
            let payload = e.encode();
            self.produce_raw(
                e.kind().topic(&self.topics),
                e.merchant_id().as_str(),
                &payload,
            )
            .await;
        }
    }

    pub(crate) async fn produce_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        let record = Outgoing {
            topic,
            key,
            payload,
            headers: &[],
        };
        self.sink.send(record).await.expect("broker acknowledges");
    }

    pub(crate) async fn wait_processed(&self, events: u64) {
        let stats = self.stats.clone();
        eventually(
            "the processor to publish every event",
            Duration::from_secs(60),
            async || {
                let done = stats.events.load(Ordering::SeqCst);
                tracing::debug!(done, of = events, "waiting for the processor");
                done >= events
            },
        )
        .await;
    }

    /// Orders and net spend per customer, read from the live actor state.
    pub(crate) async fn live_totals(&self) -> HashMap<(String, i64), (i64, i64)> {
        let read = |core: &actors::PartitionCore| {
            let mut out = Vec::new();
            for m in core.merchants() {
                for (id, c) in m.customers() {
                    let t = c.aggregate.totals();
                    out.push((
                        (m.id.to_string(), id as i64),
                        (i64::from(t.orders), t.net.minor()),
                    ));
                }
            }
            out
        };
        inspect_all(&self.registry, read)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    pub(crate) async fn history_rows(&self) -> HashMap<(String, i64), i64> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT merchant_id, customer_id, count(*) FROM rfm_score_history GROUP BY 1, 2",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        rows.into_iter().map(|(m, c, n)| ((m, c), n)).collect()
    }
}
