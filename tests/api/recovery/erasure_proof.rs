//! The proof that a redaction leaves nothing at rest: the real binary is given a customer with unmistakable
//! personal data, the customer is redacted, and then a `pg_dump` of the database (which holds the snapshots), a
//! `DUMP` of every Redis key and the decoded partition snapshot are searched byte for byte.
//!
//! And the process's own memory: every readable mapping of the running binary (`/proc/PID/mem`) is searched too.
//! Freed heap blocks are wiped by the binary's allocator (`zeroing`); without that, the email, names and phone are
//! found there, in the freed bodies and parsed strings of the webhooks that carried them.

use std::time::Duration;

use actors::{Configs, PartitionCore};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use functions::Timestamp;
use serde_json::json;
use sqlx::PgPool;
use streams::{MerchantId, Topics};

use super::{free_port, snapshot_rounds, Instance};
use crate::helpers::{
    brokers, eventually, fresh_database, post_webhook, unique, ENCRYPTION_KEYS, PII_INDEX_KEY,
    SECRET,
};
use crate::live::API_KEY;

const WAIT: Duration = Duration::from_secs(60);

/// Personal data no other test uses, so any byte found is this customer's.
struct Person {
    id: u64,
    email: String,
    first_name: String,
    last_name: String,
    phone: String,
}

impl Person {
    fn new() -> Person {
        let tag = unique("");
        Person {
            id: 8_800_000_000_000 + u64::from_str_radix(&tag[..8], 16).unwrap(),
            email: format!("erase-{tag}@example.com"),
            first_name: format!("Zqfirst{tag}"),
            last_name: format!("Zqlast{tag}"),
            phone: format!("+1555{}", u64::from_str_radix(&tag[..6], 16).unwrap()),
        }
    }

    fn needles(&self) -> [(&'static str, &[u8]); 4] {
        [
            ("email", self.email.as_bytes()),
            ("first name", self.first_name.as_bytes()),
            ("last name", self.last_name.as_bytes()),
            ("phone", self.phone.as_bytes()),
        ]
    }

    fn customer(&self) -> serde_json::Value {
        json!({"id": self.id, "email": self.email, "first_name": self.first_name,
               "last_name": self.last_name, "phone": self.phone,
               "created_at": "2026-11-20T10:12:31-05:00", "locale": "en"})
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Which of `needles` some readable mapping of process `pid` holds. Read in chunks that overlap by the longest
/// needle, so a match across a chunk boundary is still found.
fn memory_holds(pid: u32, needles: &[(&'static str, &[u8])]) -> Vec<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 8 << 20;
    let finders: Vec<_> = needles
        .iter()
        .map(|(what, n)| (*what, memchr::memmem::Finder::new(n)))
        .collect();
    let overlap = needles
        .iter()
        .map(|(_, n)| n.len() as u64)
        .max()
        .unwrap_or(0);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = Vec::new();
    let mut buffer = vec![0u8; (CHUNK + overlap) as usize];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut at = start;
        while at < end {
            let len = (end - at).min(CHUNK + overlap) as usize;
            let chunk = &mut buffer[..len];
            if mem.seek(SeekFrom::Start(at)).is_err() || mem.read_exact(chunk).is_err() {
                break;
            }
            for (what, finder) in &finders {
                if !found.contains(what) && finder.find(chunk).is_some() {
                    found.push(*what);
                }
            }
            at += CHUNK;
        }
    }
    found
}

async fn redis_dump(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, Vec<u8>)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    let mut dumped = Vec::new();
    for key in keys {
        let value: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        dumped.push((key, value.unwrap_or_default()));
    }
    dumped
}

#[tokio::test]
async fn after_a_redaction_no_dump_and_no_process_memory_holds_the_customer() {
    let prefix = format!("{}.", unique("proof"));
    let topics = Topics::with_prefix(&prefix);
    streams::admin::ensure_topics(&brokers(), &topics, 1, 1)
        .await
        .unwrap();
    let database = fresh_database().await;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let group = unique("proof-g-");
    let env = vec![
        ("SHOPIFY_API_SECRET", SECRET.to_owned()),
        ("SHOPIFY_API_KEY", API_KEY.to_owned()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", prefix),
        ("KAFKA_GROUP_ID", group.clone()),
        ("KAFKA_CREATE_TOPICS", "false".into()),
        ("SNAPSHOT_INTERVAL_MS", "200".into()),
        ("DATABASE_URL", database.clone()),
        ("REDIS_URL", redis_url.clone()),
        ("ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
        ("PII_INDEX_KEY", PII_INDEX_KEY.to_owned()),
    ];
    let mut instance = Instance {
        env,
        role: "all",
        port: free_port(),
        child: None,
        starts: 0,
    };
    instance.start();
    let address = instance.address();
    let pool = PgPool::connect(&database).await.unwrap();
    let shop = MerchantId::parse(&format!("{}.myshopify.com", unique("proof-"))).unwrap();
    let person = Person::new();

    // The processor must own the partition before the events, or they are only replayed quietly.
    eventually("the partition assigned and snapshotted", WAIT, async || {
        snapshot_rounds(&address).await > 0.0
    })
    .await;
    post_webhook(
        &address,
        &shop,
        "customers/create",
        person.customer().to_string(),
    )
    .await;
    let order = json!({"id": 77001, "customer": person.customer(), "created_at": "2026-11-21T10:00:00Z",
        "total_price": "120.00", "currency": "USD", "financial_status": "paid", "test": false,
        "email": person.email, "phone": person.phone,
        "billing_address": {"first_name": person.first_name, "last_name": person.last_name, "phone": person.phone}});
    post_webhook(&address, &shop, "orders/create", order.to_string()).await;
    eventually(
        "the customer stored with sealed personal data",
        WAIT,
        async || {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM customers WHERE merchant_id = $1 AND pii_sealed IS NOT NULL",
            )
            .bind(shop.as_str())
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        },
    )
    .await;

    // First the forgery the security review found, against the binary: a session token's signing input posted as a
    // shop/redact body with the token's signature. Refused, and nothing is erased.
    let token = loyalnest_rfm::auth::mint(
        &shop,
        API_KEY,
        SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        60,
    );
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = STANDARD.encode(URL_SAFE_NO_PAD.decode(signature).unwrap());
    let forged = reqwest::Client::new()
        .post(format!("{address}/webhooks/shopify"))
        .header("X-Shopify-Topic", "shop/redact")
        .header("X-Shopify-Hmac-Sha256", signature)
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", unique("wh-"))
        .body(signed.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400, "the forged shop/redact is refused");

    // Shopify's redaction body names the customer's email and phone too.
    let redact = json!({"shop_id": 1, "shop_domain": shop.as_str(),
        "customer": {"id": person.id, "email": person.email, "phone": person.phone}, "orders_to_redact": [77001]});
    post_webhook(&address, &shop, "customers/redact", redact.to_string()).await;
    eventually("the redaction completed", WAIT, async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM gdpr_requests WHERE merchant_id = $1 AND completed_at IS NOT NULL",
        )
        .bind(shop.as_str())
        .fetch_one(&pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    // Two snapshot rounds after it, so the stored snapshot is one taken after the erasure.
    let rounds = snapshot_rounds(&address).await;
    eventually("two snapshot rounds after the erasure", WAIT, async || {
        snapshot_rounds(&address).await >= rounds + 2.0
    })
    .await;

    let mut needles: Vec<(&'static str, &[u8])> = person.needles().to_vec();
    let id = person.id.to_string();

    // Postgres: the whole database, data only. The id may stand only in gdpr_requests, the record of the erasure.
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", &database])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    for (what, needle) in &needles {
        assert!(
            !find(text.as_bytes(), needle),
            "Postgres still holds the {what}"
        );
    }
    let mut table = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("COPY ") {
            table = rest.split_whitespace().next().unwrap_or("");
        } else if line.contains(&id) {
            assert_eq!(
                table, "public.gdpr_requests",
                "the customer's id in {table}: {line}"
            );
        }
    }

    // Redis: every key's name and serialized value.
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    needles.push(("customer id", id.as_bytes()));
    for (key, value) in redis_dump(&mut conn).await {
        for (what, needle) in &needles {
            assert!(
                !find(key.as_bytes(), needle) && !find(&value, needle),
                "Redis key {key} holds the {what}"
            );
        }
    }
    // The snapshot is in Postgres (its pieces are in the dump above, as bytes); assembled and decoded here.
    let snapshots = loyalnest_rfm::snapshots::PgSnapshots::new(pool.clone(), &group);
    let loaded = snapshots
        .load(0)
        .await
        .unwrap()
        .expect("partition 0's snapshot");
    let snapshot = loaded.stored.into_bytes().expect("its pieces assemble");
    let (core, _) =
        PartitionCore::decode_snapshot(0, &snapshot, &Configs::default(), Timestamp::from_unix(0))
            .expect("the snapshot decodes");
    let held = core.merchant(&shop).and_then(|m| m.customer(person.id));
    assert!(
        held.is_none(),
        "the snapshot after the erasure still holds the customer"
    );

    // The process: every readable byte of its memory.
    let pid = instance.pid().expect("running");
    // A control the process must hold (its consumer group, from its environment and settings): a search that
    // reads nothing cannot pass.
    let mut searched = person.needles().to_vec();
    searched.push(("control", group.as_bytes()));
    let found = memory_holds(pid, &searched);
    assert!(
        found.contains(&"control"),
        "the search read the process's memory"
    );
    assert_eq!(
        found,
        vec!["control"],
        "the process's memory still holds more than the control"
    );
}
