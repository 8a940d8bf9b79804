//! What the recovery scenarios check, sharing no code with the engine: every customer's live aggregates against the
//! oracle, every `(customer, version)` once on `rfm.updated`, each customer's last published segment, and the delta
//! rows against the records of their versions.

use super::*;

impl Scenario {
    /// Every customer served at `addresses` equal to the oracle, then every customer's last published segment.
    pub(super) async fn check_state_and_outputs(&self, addresses: &[String]) {
        let now = chrono::Utc::now().timestamp();
        self.until_consumed("every customer equal to the oracle", addresses, now)
            .await;
        // Restores publish their net changes after the state is complete: wait for the outputs to agree too.
        until_agreed(
            "every last published segment equal to the oracle",
            Duration::from_secs(60),
            20,
            async || {
                let records = read_all_records(&self.brokers, &self.topics.rfm_updated).await;
                last_segment_mismatches(&records, &self.truth, now)
            },
        )
        .await;
    }
}

impl Scenario {
    /// Waits until every customer served at `addresses` equals the oracle at `now`: the stream is consumed.
    pub(super) async fn until_consumed(&self, what: &str, addresses: &[String], now: i64) {
        until_agreed(what, Duration::from_secs(180), 100, async || {
            mismatches(addresses, &self.merchants, &self.truth, now).await
        })
        .await;
    }
}

/// Polls `differences` until it finds none. Every `report_every` rounds it prints the first few, so a timeout
/// leaves a trace of what still differed.
pub(super) async fn until_agreed(
    what: &str,
    timeout: Duration,
    report_every: u32,
    mut differences: impl AsyncFnMut() -> Vec<String>,
) {
    let mut rounds = 0;
    eventually(what, timeout, async || {
        let wrong = differences().await;
        rounds += 1;
        if rounds % report_every == 0 {
            eprintln!(
                "{what}: still differing: {:?}",
                &wrong[..wrong.len().min(5)]
            );
        }
        wrong.is_empty()
    })
    .await;
}

fn cents(decimal: &str) -> i64 {
    let negative = decimal.starts_with('-');
    let (whole, fraction) = decimal
        .trim_start_matches('-')
        .split_once('.')
        .unwrap_or((decimal, "0"));
    let value = whole.parse::<i64>().unwrap() * 100
        + format!("{fraction:0<2}")[..2].parse::<i64>().unwrap();
    if negative {
        -value
    } else {
        value
    }
}

/// One customer's (orders, net spend in cents) from whichever of `addresses` serves it from live state, or an
/// error line. A 404 everywhere means the engine has never seen the customer.
async fn live_totals(
    client: &reqwest::Client,
    addresses: &[String],
    token: &str,
    customer: u64,
) -> Result<(i64, i64), String> {
    let mut found = None;
    for address in addresses {
        let url = format!("{address}/api/v1/rfm/customers/{customer}");
        let answer = client.get(&url).bearer_auth(token).send().await;
        match answer {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.unwrap_or_default();
                let net = body["net_spend"].as_str().map(cents).unwrap_or(i64::MIN);
                let totals = (body["orders"].as_i64().unwrap_or(-1), net);
                if body["source"] == "live" {
                    return Ok(totals);
                }
                found = Some(totals);
            }
            Ok(r) if r.status() == 404 => {}
            Ok(r) => return Err(format!("{url}: HTTP {}", r.status())),
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    Ok(found.unwrap_or((0, 0)))
}

/// Customers whose served totals differ from the oracle's, as readable lines.
pub(super) async fn mismatches(
    addresses: &[String],
    merchants: &[MerchantId],
    truth: &HashMap<(String, u64), CustomerTruth>,
    now: i64,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let tokens: HashMap<String, String> = merchants
        .iter()
        .map(|m| (m.to_string(), token(m)))
        .collect();
    let mut wrong = Vec::new();
    for ((merchant, customer), t) in truth {
        let expected = t.expected(now);
        match live_totals(&client, addresses, &tokens[merchant], *customer).await {
            Ok(actual) if actual == (expected.orders, expected.net_cents) => {}
            Ok(actual) => wrong.push(format!(
                "{merchant} {customer}: {actual:?}, oracle ({}, {})",
                expected.orders, expected.net_cents
            )),
            Err(e) => return vec![e],
        }
    }
    wrong
}

fn version_key(r: &Record) -> (String, u64, u64) {
    (
        r.value["merchant_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        r.value["customer_id"].as_u64().unwrap_or_default(),
        r.value["version"].as_u64().unwrap_or_default(),
    )
}

pub(super) fn check_versions_unique(records: &[Record]) {
    let mut seen: HashMap<(String, u64, u64), usize> = HashMap::new();
    for record in records {
        *seen.entry(version_key(record)).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    // Every copy in full: byte-equal copies point at a record sent twice (a producer or publish retry), differing
    // ones at two evaluations given one version (a restore that did not see what was published).
    let copies: Vec<String> = records
        .iter()
        .filter(|r| seen.get(&version_key(r)).is_some_and(|n| *n > 1))
        .map(|r| format!("{} {:?}", r.value, r.headers))
        .collect();
    assert!(
        duplicated.is_empty(),
        "customer versions published more than once: {duplicated:?}; copies: {copies:#?}"
    );
    assert!(!records.is_empty(), "the stream moves customers");
}

/// Customers whose newest `rfm.updated` names another segment than the oracle; a customer the oracle places
/// outside the initial segment must have been published.
fn last_segment_mismatches(
    records: &[Record],
    truth: &HashMap<(String, u64), CustomerTruth>,
    now: i64,
) -> Vec<String> {
    let mut last: HashMap<(String, u64), (u64, String)> = HashMap::new();
    for record in records {
        let (merchant, customer, version) = version_key(record);
        let segment = record.value["segment"]["to"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let entry = last
            .entry((merchant, customer))
            .or_insert((0, String::new()));
        if version > entry.0 {
            *entry = (version, segment);
        }
    }
    let mut wrong = Vec::new();
    for (key, t) in truth {
        let expected = t.expected(now).segment;
        let published = last.get(key).map_or(INITIAL_SEGMENT, |(_, s)| s.as_str());
        if published != expected {
            wrong.push(format!("{key:?}: published {published}, oracle {expected}"));
        }
    }
    wrong
}

/// Published moves (`segment.from != segment.to`) without their delta row.
pub(super) async fn missing_delta_rows(db: &PgPool, records: &[Record]) -> Vec<String> {
    let rows: Vec<(String, i64, i32)> =
        sqlx::query_as("SELECT merchant_id, customer_id, version FROM rfm_segment_deltas")
            .fetch_all(db)
            .await
            .unwrap_or_default();
    let written: std::collections::HashSet<(String, u64, u64)> = rows
        .into_iter()
        .map(|(m, c, v)| (m, c as u64, v as u64))
        .collect();
    records
        .iter()
        .filter(|r| r.value["segment"]["from"] != r.value["segment"]["to"])
        .map(version_key)
        .filter(|key| !written.contains(key))
        .map(|key| format!("{key:?} moved on rfm.updated but has no delta row"))
        .collect()
}

pub(super) fn check_delta_rows(rows: Vec<(String, i64, i32, String)>, records: &[Record]) {
    let published: HashMap<(String, u64, u64), String> = records
        .iter()
        .map(|r| {
            let to = r.value["segment"]["to"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (version_key(r), to)
        })
        .collect();
    assert!(!rows.is_empty(), "segment moves are written to Postgres");
    for (merchant, customer, version, to) in rows {
        let key = (merchant, customer as u64, version as u64);
        let versions: Vec<_> = published
            .keys()
            .filter(|(m, c, _)| *m == key.0 && *c == key.1)
            .collect();
        assert_eq!(
            published.get(&key),
            Some(&to),
            "delta row {key:?} matches its rfm.updated record; published: {versions:?}"
        );
    }
}
