//! Faults off the stream core's happy path, each of which once lost or corrupted state: input topics whose
//! partition counts differ, and a merchant configuration that cannot be read for a while.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use functions::{Money, RfmConfig};
use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::startup::build_processor;
use loyalnest_rfm::store::Store;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use streams::events::OrderCreated;
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

use crate::harness::{start_processor, T0};
use crate::helpers::{brokers, eventually, unique};

#[actix_web::test]
async fn input_topics_with_different_partition_counts_are_refused_at_start() {
    crate::helpers::init_test_logs();
    let prefix = format!("{}.", unique("mixed"));
    let env = std::collections::HashMap::from([
        ("SHOPIFY_API_SECRET", "s".to_owned()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", prefix),
        ("KAFKA_GROUP_ID", unique("g-")),
    ]);
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).unwrap();
    // One input topic made by hand with 12 partitions, the rest by `ensure_topics` with 3.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let odd = settings.topics.refunds_create.clone();
    admin
        .create_topics(
            &[NewTopic::new(&odd, 12, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    streams::admin::ensure_topics(&settings.kafka_brokers, &settings.topics, 3, 1)
        .await
        .unwrap();

    let refused = build_processor(&settings, Arc::new(actors::SystemClock)).await;
    let message = format!(
        "{:#}",
        refused.err().expect("the processor refuses to start")
    );
    assert!(message.contains(&format!("{odd}: 12")), "{message}");
    assert!(
        message.contains(&format!("{}: 3", settings.topics.orders_create)),
        "{message}"
    );
}

/// A $60 order: M5 under thresholds from a $10 average order, M2 under the defaults.
fn order(merchant: &MerchantId, customer_id: u64) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: unique("e"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id,
        order_id: 7,
        total_price: "60.00".into(),
        currency: "USD".into(),
        created_at: DateTime::<Utc>::from_timestamp(T0 - 3_600, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

#[actix_web::test]
async fn a_configuration_that_cannot_be_read_holds_the_records_until_it_can() {
    let h = start_processor(1).await;
    let merchant = MerchantId::parse(&format!("{}.myshopify.com", unique("cfg"))).unwrap();
    let store = Store::connect_lazy(&h.db_url).unwrap();
    let ten_dollars = Money::parse("10.00", 2).unwrap();
    store
        .save_config(&merchant, &RfmConfig::from_aov(ten_dollars))
        .await
        .unwrap();
    // The configuration table disappears (as if Postgres refused the read) while the merchant's first order
    // arrives.
    sqlx::query("ALTER TABLE program_settings RENAME TO program_settings_away")
        .execute(&h.db)
        .await
        .unwrap();
    h.produce(&[order(&merchant, 1)]).await;
    let stats = h.stats.clone();
    eventually(
        "the configuration load to fail",
        Duration::from_secs(30),
        async || stats.config_load_failures.load(Ordering::SeqCst) > 0,
    )
    .await;
    assert_eq!(
        stats.events.load(Ordering::SeqCst),
        0,
        "the order waits instead of being scored under the default thresholds"
    );

    sqlx::query("ALTER TABLE program_settings_away RENAME TO program_settings")
        .execute(&h.db)
        .await
        .unwrap();
    h.wait_processed(1).await;
    let db = h.db.clone();
    let monetary = async || -> Option<i16> {
        sqlx::query_scalar(
            "SELECT monetary FROM customers WHERE merchant_id = $1 AND customer_id = 1",
        )
        .bind(merchant.as_str())
        .fetch_optional(&db)
        .await
        .unwrap()
    };
    eventually(
        "the customer's row to be written",
        Duration::from_secs(30),
        async || monetary().await.is_some(),
    )
    .await;
    assert_eq!(
        monetary().await,
        Some(5),
        "scored under the merchant's own thresholds, without a restart"
    );
}

/// How long the private broker answers nothing: longer than the sink's delivery timeout, so the first attempt at
/// the dead letter fails.
const HICCUP: Duration = Duration::from_secs(3);

#[actix_web::test]
async fn a_dead_letter_outlasts_a_broker_hiccup() {
    crate::helpers::init_test_logs();
    let broker = crate::helpers::PrivateBroker::start(crate::helpers::free_port());
    let topics = streams::Topics::with_prefix(&format!("{}.", unique("dlq")));
    streams::admin::ensure_topics(&broker.address(), &topics, 1, 1)
        .await
        .unwrap();
    let sink = streams::SinkConfig {
        delivery_timeout: Duration::from_millis(1_000),
        ..streams::SinkConfig::new(broker.address())
    }
    .build()
    .unwrap();
    let letter = streams::dlq::DeadLetter {
        topic: topics.orders_create.clone(),
        partition: 0,
        offset: 41,
        key: Some(b"poison.myshopify.com".to_vec()),
        payload: b"{not json".to_vec(),
        reason: "invalid JSON".into(),
    };

    broker.set_frozen(true);
    let hiccup = std::time::Instant::now();
    let delivering = actix_web::rt::spawn({
        let (sink, dlq) = (sink.clone(), topics.dlq.clone());
        async move { letter.deliver(&sink, &dlq).await }
    });
    while hiccup.elapsed() < HICCUP {
        assert!(
            !delivering.is_finished(),
            "the letter waits for the broker instead of being given up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.set_frozen(false);
    tokio::time::timeout(Duration::from_secs(30), delivering)
        .await
        .expect("delivered once the broker answers")
        .unwrap();
    let records = crate::helpers::read_all_records(&broker.address(), &topics.dlq).await;
    // An attempt that timed out while the broker was frozen may still land once it wakes: at least once, and
    // every copy is the letter.
    assert!(
        !records.is_empty(),
        "the letter is on the dead-letter topic"
    );
    for record in &records {
        assert_eq!(record.raw, b"{not json");
        assert_eq!(
            record
                .headers
                .get(streams::outputs::dlq_headers::OFFSET)
                .map(String::as_str),
            Some("41"),
            "{:?}",
            record.headers
        );
    }
}

#[actix_web::test]
async fn a_replay_takes_every_letter_of_a_batch_written_at_once() {
    crate::helpers::init_test_logs();
    let topics = streams::Topics::with_prefix(&format!("{}.", unique("replay")));
    streams::admin::ensure_topics(&brokers(), &topics, 1, 1)
        .await
        .unwrap();
    // Letters of concurrent batches reach the broker in one produce request; Tansu then answers ListOffsets with
    // that batch's base offset, short of the end.
    let sink = streams::SinkConfig {
        linger: Duration::from_millis(50),
        ..streams::SinkConfig::new(brokers())
    }
    .build()
    .unwrap();
    let letters: Vec<streams::dlq::DeadLetter> = (0..3)
        .map(|offset| streams::dlq::DeadLetter {
            topic: topics.orders_create.clone(),
            partition: 0,
            offset,
            key: Some(b"replay.myshopify.com".to_vec()),
            payload: format!("{{not json {offset}").into_bytes(),
            reason: "invalid JSON".into(),
        })
        .collect();
    futures_util::future::join_all(letters.iter().map(|l| l.send(&sink, &topics.dlq)))
        .await
        .into_iter()
        .for_each(|sent| sent.expect("letter acknowledged"));

    let report = streams::replay::replay_dlq(
        &brokers(),
        &unique("replay-"),
        &topics,
        &sink,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!((report.replayed, report.skipped), (3, 0));
    let back = crate::helpers::read_all_records(&brokers(), &topics.orders_create).await;
    assert_eq!(back.len(), 3, "every letter is back on its topic");
}
