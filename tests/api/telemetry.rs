//! Metrics and traces of the real binary (`serve --role all` against Tansu, Redis and Postgres): `/metrics` lists
//! every family before and after traffic and passes `promtool check metrics`, every family the dashboards and
//! alerts name is exported, and a webhook's W3C trace id reaches its input record, `rfm.updated` and `rfm.task`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use streams::metric_names::FAMILIES;
use streams::{MerchantId, Topics};

use crate::helpers::{
    brokers, eventually, free_port, fresh_database, read_records, unique, Record, SECRET,
};
use crate::live::{shop, API_KEY};
use loyalnest_rfm::shopify::hmac::sign;

/// The real binary on `port`, killed when dropped.
pub(crate) struct Binary(Child);

impl Binary {
    fn start(port: u16, prefix: &str, database: &str) -> Binary {
        Binary::start_with(port, prefix, database, &[])
    }

    /// With `extra` variables added to the environment.
    pub(crate) fn start_with(
        port: u16,
        prefix: &str,
        database: &str,
        extra: &[(&str, String)],
    ) -> Binary {
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        std::fs::create_dir_all("artifacts").expect("artifacts");
        let log = std::fs::File::create("artifacts/telemetry-binary.log").expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
            .args(["serve", "--role", "all"])
            .envs([
                ("SHOPIFY_API_SECRET", SECRET.to_owned()),
                ("SHOPIFY_API_KEY", API_KEY.to_owned()),
                ("KAFKA_BROKERS", brokers()),
                ("KAFKA_TOPIC_PREFIX", prefix.to_owned()),
                ("KAFKA_GROUP_ID", unique("tm-g-")),
                ("KAFKA_CREATE_TOPICS", "false".into()),
                ("SNAPSHOT_INTERVAL_MS", "500".into()),
                ("DATABASE_URL", database.to_owned()),
                ("REDIS_URL", redis),
                ("HTTP_ADDR", format!("127.0.0.1:{port}")),
            ])
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the binary starts");
        Binary(child)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the instance owns a partition and has restored it. Live, not only owned: records applied by a
/// restore's quiet replay are published by its last chunk, from the state, outside their input record's trace.
pub(crate) async fn until_live(address: &str) {
    eventually(
        "the instance owns its partition, restored",
        Duration::from_secs(90),
        async || {
            let text = scrape(address).await;
            sum(&text, "rfm_partitions_owned", "") >= 1.0
                && sum(&text, "rfm_restore_duration_seconds_count", "") >= 1.0
        },
    )
    .await;
}

pub(crate) async fn scrape(address: &str) -> String {
    match reqwest::get(format!("{address}/metrics")).await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Every sample of the exposition: series (name with labels) → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of `family` whose labels contain `with` (all of them for "").
pub(crate) fn sum(text: &str, family: &str, with: &str) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or_default();
            name == family && series.contains(with)
        })
        .map(|(_, v)| v)
        .sum()
}

/// Family names declared in the exposition (`# TYPE name kind`).
fn declared(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// `promtool check metrics` on `text`, when promtool is installed (CI installs it); its complaints otherwise.
fn promtool(text: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("promtool reads");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(said)
    })
}

/// The families deploy/'s dashboards and alerts name, from `python3 deploy/metric-names`; `METRIC_NAMES_FILE`
/// (one name a line) stands in where that script is not in the tree yet.
fn dashboard_names() -> Option<Vec<String>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/deploy/metric-names");
    let text = if std::path::Path::new(&script).exists() {
        let out = Command::new("python3")
            .arg(&script)
            .current_dir(root)
            .output()
            .expect("python3 runs deploy/metric-names");
        assert!(out.status.success(), "deploy/metric-names failed: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8 names")
    } else {
        std::fs::read_to_string(std::env::var("METRIC_NAMES_FILE").ok()?)
            .expect("METRIC_NAMES_FILE")
    };
    Some(
        text.split_whitespace()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Every family of `metric_names` is declared, and promtool has nothing to say. Before traffic, the families
/// labelled by partition may still wait for the first statistics or tick (`per_partition` false).
fn assert_clean_and_complete(text: &str, when: &str, per_partition: bool) {
    let declared = declared(text);
    let by_partition =
        |n: &str| n.starts_with("rfm_consumer_lag") || n == "rfm_snapshot_age_seconds";
    let missing: Vec<&str> = FAMILIES
        .iter()
        .map(|f| f.name)
        .filter(|n| !declared.contains(n))
        .filter(|n| per_partition || !by_partition(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: families not in /metrics: {missing:?}"
    );
    if let Some(result) = promtool(text) {
        if let Err(said) = result {
            std::fs::write("artifacts/telemetry-metrics.txt", text).expect("artifact");
            panic!("{when}: promtool check metrics: {said}");
        }
    } else {
        eprintln!("promtool not installed: /metrics not linted");
    }
}

pub(crate) async fn post_order(
    address: &str,
    shop: &MerchantId,
    order: u64,
    traceparent: Option<&str>,
) {
    let created = chrono::Utc::now() - chrono::Duration::days(2);
    let body = json!({"id": order, "customer": {"id": order}, "created_at": created.to_rfc3339(),
        "total_price": "40.00", "currency": "USD", "financial_status": "paid", "test": false})
    .to_string();
    let mut request = reqwest::Client::new()
        .post(format!("{address}/webhooks/shopify"))
        .header("X-Shopify-Topic", "orders/create")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", unique("wh-"));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = request.body(body).send().await.expect("ingress reachable");
    assert_eq!(response.status(), 200, "order {order} accepted");
}

fn header<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record.headers.get(name).map(String::as_str)
}

pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[actix_web::test]
async fn metrics_are_described_linted_and_cover_the_dashboards_and_a_trace_crosses_kafka() {
    let prefix = format!("{}.", unique("tm"));
    let database = fresh_database().await;
    let topics = Topics::with_prefix(&prefix);
    streams::admin::ensure_topics(&brokers(), &topics, 1, 1)
        .await
        .expect("topics");
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let _binary = Binary::start(port, &prefix, &database);
    until_live(&address).await;
    // Before any event: every family is there, described, and lint-clean.
    assert_clean_and_complete(&scrape(&address).await, "before traffic", false);

    let shop = shop();
    post_order(&address, &shop, 1, Some(CALLER)).await;
    post_order(&address, &shop, 2, Some("not-a-traceparent")).await;
    post_order(&address, &shop, 3, None).await;

    // The trace id arrives on the input record (with a span of the ingress), then on rfm.updated and rfm.task.
    let is_traced = |r: &Record| header(r, "traceparent").is_some_and(|tp| tp.contains(TRACE_ID));
    let inputs = read_records(
        &brokers(),
        &topics.orders_create,
        move |r| r.value["order_id"] == 3,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(inputs.len(), 3, "three orders produced");
    let traced: Vec<&Record> = inputs.iter().filter(|r| is_traced(r)).collect();
    assert_eq!(
        traced.len(),
        1,
        "only the order with a valid traceparent continues the caller's trace"
    );
    let forwarded = header(traced[0], "traceparent").unwrap_or_default();
    assert_ne!(
        forwarded, CALLER,
        "the ingress forwards its own span as the parent"
    );
    for r in &inputs {
        let tp = header(r, "traceparent").expect("every input record is traced");
        assert_eq!(
            header(r, "trace_id"),
            Some(&tp[3..35]),
            "trace_id header is the W3C trace id"
        );
    }
    for topic in [&topics.rfm_updated, &topics.rfm_task] {
        let records = read_records(
            &brokers(),
            topic,
            move |r| is_traced(r),
            Duration::from_secs(30),
        )
        .await;
        let last = records.last().expect("a traced record");
        assert_eq!(
            last.value["customer_id"], 1,
            "{topic}: the traced order's customer"
        );
        assert_eq!(
            header(last, "traceparent"),
            Some(forwarded),
            "{topic}: the input record's traceparent"
        );
    }

    // After traffic: the new families moved, and the exposition is still complete and clean.
    let (a, topic) = (
        address.clone(),
        format!("topic=\"{}\"", topics.orders_create),
    );
    eventually(
        "three events processed and a census taken",
        Duration::from_secs(40),
        async || {
            let text = scrape(&a).await;
            sum(&text, "rfm_events_processed_total", &topic) >= 3.0
                && sum(&text, "rfm_segment_customers", "") >= 3.0
                && sum(&text, "rfm_event_to_publish_seconds_count", "") >= 3.0
                && text.contains("rfm_consumer_lag_records{")
        },
    )
    .await;
    let text = scrape(&address).await;
    std::fs::write("artifacts/telemetry-metrics.txt", &text).expect("artifact");
    assert!(
        text.contains(&format!(
            "rfm_consumer_lag_records{{{topic},partition=\"0\"}}"
        )) || text.contains(&format!(
            "rfm_consumer_lag_records{{partition=\"0\",{topic}}}"
        )),
        "lag of the owned partition exported"
    );
    assert_eq!(
        sum(&text, "ingress_webhooks_total", "outcome=\"accepted\""),
        3.0
    );
    assert_clean_and_complete(&text, "after traffic", true);
    match dashboard_names() {
        Some(names) => {
            let declared = declared(&text);
            let missing: Vec<&String> = names.iter().filter(|n| !declared.contains(&n.as_str())).collect();
            assert!(missing.is_empty(), "dashboards or alerts name families /metrics lacks: {missing:?}");
        }
        None => eprintln!("deploy/metric-names is not in this tree and METRIC_NAMES_FILE is unset: dashboard coverage not checked"),
    }
}
