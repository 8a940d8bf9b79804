//! A snapshot of another incarnation of the topics is refused. The real binary runs against the shared broker with
//! group G and its Postgres snapshot store, and stops; then it runs against a fresh broker (a private Tansu) whose
//! topics have the same names, with the same group and store, while the new log's records are produced during its
//! start-up. The old snapshots name offsets the new log also has, so before snapshots were bound to their
//! incarnation they were restored over the new log: the old run's customers appeared and the new log's first
//! records (below the old offsets) were dropped as already held.
//!
//! Every Tansu answers the same cluster id (`tansu_cluster` unless `--cluster-id` is given), so it is the stamps of
//! the last records the snapshots applied that tell the two logs apart here.

use serde_json::Value;

use super::*;
use crate::helpers::PrivateBroker;
use crate::live::token;

#[actix_web::test]
async fn a_snapshot_of_replaced_topics_is_refused_and_the_new_log_is_counted_exactly() {
    let old = Scenario::new("stale").await;
    let mut instance = old.instance();
    let address = instance.address();
    let addresses = [address.clone()];
    instance.start();
    wait_for_snapshots_after_restore(&address).await;
    old.produce(&old.events).await;
    let now = chrono::Utc::now().timestamp();
    old.until_consumed("the old stream consumed", &addresses, now)
        .await;
    let rounds = snapshot_rounds(&address).await;
    eventually(
        "snapshot rounds after the old stream",
        Duration::from_secs(60),
        async || snapshot_rounds(&address).await >= rounds + 6.0,
    )
    .await;
    instance.stop();

    let broker = PrivateBroker::start(free_port());
    let new = old.reincarnated(&broker.address()).await;
    let mut instance = new.instance();
    let address = instance.address();
    instance.start();
    // The new log grows while the instance starts and hydrates its partitions.
    let (early, late) = new.events.split_at(new.events.len() / 2);
    new.produce(early).await;
    eventually(
        "the new run's partitions restored",
        Duration::from_secs(60),
        async || {
            metric(&address, "rfm_partitions_owned").await == 3.0
                && metric(&address, "processor_partitions_restoring").await == 0.0
        },
    )
    .await;
    new.produce(late).await;

    new.check_alone(&address).await;
    assert!(
        metric(&address, "processor_snapshots_refused_total").await > 0.0,
        "the old run's snapshots were refused"
    );
    for merchant in &old.merchants {
        let answer: Value = reqwest::Client::new()
            .get(format!("{address}/api/v1/rfm/segments"))
            .bearer_auth(token(merchant))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(
            answer["source"], "live",
            "{merchant}, a merchant of the old run only, is in the new run's state: {answer}"
        );
    }
}

impl Scenario {
    /// The same topic names, group, database and snapshot store on another broker, with merchants and a stream
    /// of its own.
    async fn reincarnated(&self, broker: &str) -> Scenario {
        streams::admin::ensure_topics(broker, &self.topics, 3, 1)
            .await
            .unwrap();
        let merchants: Vec<MerchantId> = (0..4)
            .map(|i| MerchantId::parse(&format!("{}-{i}.myshopify.com", unique("anew"))).unwrap())
            .collect();
        let (events, truth) = script(&merchants);
        let mut scenario = Scenario {
            brokers: broker.to_owned(),
            topics: self.topics.clone(),
            database: self.database.clone(),
            env: self.env.clone(),
            merchants,
            events,
            truth,
        };
        scenario.set_env("KAFKA_BROKERS", broker);
        scenario
    }

    /// [`Scenario::check`] for a scenario that shares its database with an earlier one: delta rows of this
    /// scenario's merchants only are compared with this broker's records.
    async fn check_alone(&self, address: &str) {
        self.check_state_and_outputs(&[address.to_owned()]).await;
        let db = PgPool::connect(&self.database).await.unwrap();
        let ours: Vec<String> = self.merchants.iter().map(|m| m.to_string()).collect();
        let rows: Vec<(String, i64, i32, String)> = sqlx::query_as(
            "SELECT merchant_id, customer_id, version, to_segment FROM rfm_segment_deltas
             WHERE merchant_id = ANY($1)",
        )
        .bind(&ours)
        .fetch_all(&db)
        .await
        .unwrap();
        let records = read_all_records(&self.brokers, &self.topics.rfm_updated).await;
        check_versions_unique(&records);
        check_delta_rows(rows, &records);
    }
}
