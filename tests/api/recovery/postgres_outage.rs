//! Postgres stopped and restarted mid-stream: the processor retries its writes, holds consumption back instead of
//! dropping anything (the in-flight window fills), and once Postgres is back every row is written exactly as the
//! published records say. The Postgres here is a private cluster the test creates with `initdb` as the `postgres`
//! user (CI runs as root).

use std::path::PathBuf;

use super::*;

/// A private Postgres cluster in a temporary directory, stopped and removed when dropped.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's Postgres binaries")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions.pop().expect("a Postgres version")
}

/// Runs a Postgres tool as the `postgres` user, which it insists on.
fn as_postgres(tool: &str, args: &[&str]) {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin(tool))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("runuser");
    assert!(status.success(), "{tool} {args:?}");
}

impl PrivatePostgres {
    fn init(port: u16) -> PrivatePostgres {
        let dir = std::env::temp_dir().join(unique("loyalnest-pg-"));
        std::fs::create_dir_all(&dir).unwrap();
        let owner = Command::new("chown")
            .arg("postgres")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(owner.success());
        let pg = PrivatePostgres { dir, port };
        as_postgres(
            "initdb",
            &["-D", pg.data(), "-A", "trust", "-U", "postgres"],
        );
        pg.start();
        pg
    }

    fn data(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data()
        );
        let log = format!("{}/server.log", self.data());
        as_postgres(
            "pg_ctl",
            &["-D", self.data(), "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// An immediate shutdown: connections drop as if the server had crashed.
    fn stop(&self) {
        as_postgres(
            "pg_ctl",
            &["-D", self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Short, so the outage below outlasts it; librdkafka wants it no shorter than the session timeout.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(SESSION_TIMEOUT_MS + 1_000);

#[actix_web::test]
async fn postgres_down_and_back_mid_stream_loses_and_duplicates_nothing() {
    let mut scenario = Scenario::new("pgout").await;
    scenario.set_env(
        "KAFKA_MAX_POLL_INTERVAL_MS",
        &MAX_POLL_INTERVAL.as_millis().to_string(),
    );
    let pg = PrivatePostgres::init(free_port());
    scenario.use_database(&pg.url());
    let (instance, parts) = scenario.first_third_snapshotted().await;
    let address = instance.address();

    // A customer whose recency boundary (day 8: R5 → R4) falls a few seconds into the outage: the tick that
    // fires it must not block the loop on the unreachable Postgres.
    let (boundary_shop, boundary_customer) = boundary_customer(&scenario, &pg).await;

    // Postgres goes away while the next third arrives: writes are retried, not dropped, and consumption pauses.
    pg.stop();
    scenario.produce(parts[1]).await;
    eventually(
        "Postgres writes to be retried and consumption paused",
        Duration::from_secs(60),
        async || {
            metric(&address, "processor_store_retries_total").await > 0.0
                && metric(&address, "processor_paused").await == 1.0
        },
    )
    .await;
    // The outage outlasts the poll interval: a loop blocked on its writes would be dropped from the group and its
    // partitions revoked; a paused one keeps polling and keeps them.
    let outage = std::time::Instant::now();
    while outage.elapsed() < MAX_POLL_INTERVAL + Duration::from_secs(3) {
        assert_eq!(
            metric(&address, "processor_paused").await,
            1.0,
            "still paused"
        );
        assert_eq!(metric(&address, "rfm_partitions_owned").await, 3.0);
        assert_eq!(
            metric(&address, "processor_partitions_revoked_total").await,
            0.0,
            "membership kept through the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    pg.start();
    scenario.produce(parts[2]).await;
    scenario.check(&[address]).await;
    let db = PgPool::connect(&pg.url()).await.unwrap();
    eventually(
        "the boundary that fired during the outage to be written",
        Duration::from_secs(60),
        async || recency(&db, &boundary_shop, boundary_customer).await == Some(4),
    )
    .await;
}

/// Seconds after its order is produced that the boundary customer crosses day 8.
const BOUNDARY_LEAD: i64 = 6;

/// Produces one order dated eight days minus `BOUNDARY_LEAD` seconds ago for a shop of its own, and waits for its
/// row (R5) to be written.
async fn boundary_customer(scenario: &Scenario, pg: &PrivatePostgres) -> (String, i64) {
    let shop = MerchantId::parse(&format!("{}.myshopify.com", unique("boundary"))).unwrap();
    let created = chrono::Utc::now().timestamp() - 8 * 86_400 + BOUNDARY_LEAD;
    let order = InputEvent::OrderCreated(streams::events::OrderCreated {
        event_id: unique("e"),
        schema_version: streams::SCHEMA_VERSION,
        merchant_id: shop.clone(),
        customer_id: 1,
        order_id: 1,
        total_price: "20.00".into(),
        currency: "USD".into(),
        created_at: chrono::DateTime::from_timestamp(created, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    });
    scenario.produce(&[order]).await;
    let db = PgPool::connect(&pg.url()).await.unwrap();
    eventually(
        "the boundary customer's first row",
        Duration::from_secs(30),
        async || recency(&db, shop.as_str(), 1).await == Some(5),
    )
    .await;
    db.close().await;
    (shop.to_string(), 1)
}

async fn recency(db: &PgPool, shop: &str, customer: i64) -> Option<i16> {
    sqlx::query_scalar("SELECT recency FROM customers WHERE merchant_id = $1 AND customer_id = $2")
        .bind(shop)
        .bind(customer)
        .fetch_optional(db)
        .await
        .ok()
        .flatten()
}
