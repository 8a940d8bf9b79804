//! A stop as an orchestrator asks for it: `serve --role processor` and `serve --role ingress` run as separate
//! processes with probe routes on `HTTP_ADDR`, get SIGTERM, turn `/ready` to 503 first, and exit 0 on their own;
//! the processor's group then has committed offsets at the end of every input partition, so its hand-over
//! snapshot covers everything it applied and a restart replays nothing. A processor with static membership
//! (`KAFKA_GROUP_INSTANCE_ID`) works against Tansu, which ignores the field.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Instant;

use chrono::DateTime;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use streams::events::OrderCreated;
use streams::SCHEMA_VERSION;

use super::*;
use crate::helpers::{fixture, post_webhook};

/// How long a stop may take before the binary gives up and exits 1 (`SHUTDOWN_GRACE_SECS`).
const GRACE_SECS: u64 = 20;
/// How long `/ready` answers 503 before anything stops (`SHUTDOWN_DELAY_MS`): long enough to be seen.
const DELAY_MS: u64 = 1_500;

/// Where each input partition ends, from the broker's acknowledgements of what this test produced.
type Ends = HashMap<(String, i32), i64>;

async fn produce_tracking(brokers: &str, topics: &Topics, events: &[InputEvent], ends: &mut Ends) {
    // A broker shared with the whole suite can be slow to acknowledge; waiting longer is not a failure here.
    let sink = SinkConfig {
        delivery_timeout: Duration::from_secs(30),
        ..SinkConfig::new(brokers.to_owned())
    }
    .build()
    .unwrap();
    for e in events {
        let payload = e.encode();
        let topic = e.kind().topic(topics);
        let record = Outgoing {
            topic,
            key: e.merchant_id().as_str(),
            payload: &payload,
            headers: &[],
        };
        let delivered = sink.send(record).await.expect("broker acknowledges");
        let end = ends
            .entry((topic.to_owned(), delivered.partition))
            .or_default();
        *end = (*end).max(delivered.offset + 1);
    }
}

fn order_of(merchant: &MerchantId) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: unique("e"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id: 1,
        order_id: 1,
        total_price: "25.00".into(),
        currency: "USD".into(),
        created_at: DateTime::from_timestamp(chrono::Utc::now().timestamp() - 3_600, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

/// Produces one order of a fresh merchant into each of the 3 partitions (after everything else) and waits until
/// each has its `rfm.updated`: partitions are applied in order, so by then every earlier record was applied.
async fn wait_until_applied(scenario: &Scenario, ends: &mut Ends) {
    let mut markers: HashMap<i32, MerchantId> = HashMap::new();
    while markers.len() < 3 {
        let marker = MerchantId::parse(&format!("{}.myshopify.com", unique("marker-"))).unwrap();
        let before = ends.clone();
        produce_tracking(
            &scenario.brokers,
            &scenario.topics,
            &[order_of(&marker)],
            ends,
        )
        .await;
        let landed = ends
            .iter()
            .find(|(k, v)| before.get(*k) != Some(*v))
            .map(|((_, partition), _)| *partition)
            .expect("the marker landed somewhere");
        markers.entry(landed).or_insert(marker);
    }
    eventually(
        "every partition's marker published",
        Duration::from_secs(90),
        async || {
            let records = read_all_records(&scenario.brokers, &scenario.topics.rfm_updated).await;
            markers
                .values()
                .all(|m| records.iter().any(|r| r.key == m.as_str()))
        },
    )
    .await;
}

/// The group's committed offset of every partition in `ends` (nothing committed reads as 0).
fn committed(brokers: &str, group: &str, ends: &Ends) -> Ends {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for (topic, partition) in ends.keys() {
        list.add_partition(topic, *partition);
    }
    let found = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    found
        .elements()
        .iter()
        .map(|e| {
            let offset = e.offset().to_raw().unwrap_or(0).max(0);
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect()
}

async fn ready_status(address: &str) -> Option<u16> {
    let answer = reqwest::get(format!("{address}/ready")).await.ok()?;
    Some(answer.status().as_u16())
}

/// Sends SIGTERM, requires `/ready` to answer 503 before the process is gone, and returns its exit status.
async fn terminate(instance: &mut Instance) -> ExitStatus {
    let address = instance.address();
    let mut child = instance.child.take().expect("a running instance");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
    let mut saw_503 = false;
    // A bound for a hung process only; the binary enforces the grace itself (it exits 1 past it).
    let deadline = Instant::now() + Duration::from_secs(GRACE_SECS + 30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(saw_503, "/ready answered 503 before the process exited");
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        if !saw_503 && ready_status(&address).await == Some(503) {
            saw_503 = true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn group_of(scenario: &Scenario) -> String {
    let (_, group) = scenario
        .env
        .iter()
        .find(|(k, _)| *k == "KAFKA_GROUP_ID")
        .expect("a group");
    group.clone()
}

fn stopping_instance(scenario: &Scenario, role: &'static str) -> Instance {
    let mut instance = scenario.instance();
    instance.role = role;
    instance
        .env
        .push(("SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string()));
    instance
        .env
        .push(("SHUTDOWN_DELAY_MS", DELAY_MS.to_string()));
    instance
}

async fn wait_ready(address: &str, what: &str) {
    eventually(what, Duration::from_secs(90), async || {
        ready_status(address).await == Some(200)
    })
    .await;
}

#[actix_web::test]
async fn sigterm_turns_ready_off_hands_over_commits_and_exits_zero() {
    let mut scenario = Scenario::new("graceful").await;
    // No periodic snapshot after the first: offsets at the end can only come from the hand-over at the stop.
    scenario.set_env("SNAPSHOT_INTERVAL_MS", "3600000");
    let mut processor = stopping_instance(&scenario, "processor");
    let mut ingress = stopping_instance(&scenario, "ingress");
    processor.start();
    ingress.start();
    wait_ready(
        &processor.address(),
        "the processor to own and restore its partitions",
    )
    .await;
    wait_ready(
        &ingress.address(),
        "the ingress's producer to reach the broker",
    )
    .await;
    let health = reqwest::get(format!("{}/health", processor.address()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the processor serves /health");
    let metrics = reqwest::get(format!("{}/metrics", processor.address()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(streams::metric_names::PARTITIONS_OWNED),
        "{metrics}"
    );

    // Webhooks through the ingress first: answered 200 only once on Kafka, so the offsets this test sees
    // acknowledged afterwards (the markers in every orders partition included) are the ends.
    for _ in 0..5 {
        let body = fixture("orders_create.json");
        post_webhook(
            &ingress.address(),
            &scenario.merchants[0],
            "orders/create",
            body,
        )
        .await;
    }
    let mut ends = Ends::new();
    produce_tracking(
        &scenario.brokers,
        &scenario.topics,
        &scenario.events,
        &mut ends,
    )
    .await;
    wait_until_applied(&scenario, &mut ends).await;

    let status = terminate(&mut processor).await;
    assert!(
        status.success(),
        "the processor exits 0 after a stop: {status:?}"
    );
    let done = committed(&scenario.brokers, &group_of(&scenario), &ends);
    for (partition, end) in &ends {
        assert_eq!(
            done.get(partition),
            Some(end),
            "committed offset of {partition:?} is at its end"
        );
    }

    let status = terminate(&mut ingress).await;
    assert!(
        status.success(),
        "the ingress exits 0 after a stop: {status:?}"
    );
}

#[actix_web::test]
async fn a_processor_with_static_membership_works_against_tansu() {
    let scenario = Scenario::new("static").await;
    let mut processor = stopping_instance(&scenario, "processor");
    processor
        .env
        .push(("KAFKA_GROUP_INSTANCE_ID", unique("processor-0-")));
    processor.start();
    wait_ready(
        &processor.address(),
        "the static member to own and restore its partitions",
    )
    .await;
    let mut ends = Ends::new();
    produce_tracking(
        &scenario.brokers,
        &scenario.topics,
        &scenario.events,
        &mut ends,
    )
    .await;
    wait_until_applied(&scenario, &mut ends).await;
    let status = terminate(&mut processor).await;
    assert!(status.success(), "{status:?}");
}

#[actix_web::test]
async fn a_librdkafka_property_it_refuses_stops_start_up_naming_the_variable() {
    let scenario = Scenario::new("badprop").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
        .args(["serve", "--role", "processor"])
        .envs(scenario.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("KAFKA_CONFIG_SECURITY_PROTOCOL", "bogus")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // A bound for a process that wrongly keeps running; it is killed then, and the assertion below fails.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("reap");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "start-up fails: {stderr}");
    assert!(
        stderr.contains("KAFKA_CONFIG_SECURITY_PROTOCOL") && stderr.contains("security.protocol"),
        "the error names the variable and the property: {stderr}"
    );
}
