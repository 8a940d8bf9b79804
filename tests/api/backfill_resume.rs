//! Install backfills that outlive their instance (issue 19), against the real binary (`serve --role ingress`),
//! Tansu, Postgres and the Admin API stand-in serving both the install and a big generated shop's bulk operation:
//! the instance that started the backfill is SIGKILLed part-way, two new instances start at once, and exactly one
//! of them continues it (lease) from its last acknowledged line to the oracle's result. A stopped (SIGTERM)
//! instance pauses its backfill, exits 0 and gives the lease up.

use std::time::Duration;

use loyalnest_rfm::shopify::standin::server::Standin;
use loyalnest_rfm::shopify::standin::shop_data::{GeneratedShop, ShopSpec};
use sqlx::PgPool;
use streams::MerchantId;

use crate::backfill::{engine, oracle};
use crate::harness::{start_processor, Harness, T0};
use crate::helpers::{brokers, eventually, record_count};
use crate::shopify_sync::{install, shop, standin, Binary};

const CUSTOMERS: u64 = 1_000;
const ORDERS: u64 = 12_000;
const BATCH: u64 = 200;

struct Setup {
    h: Harness,
    standin: Standin,
    shop: MerchantId,
    data: GeneratedShop,
}

async fn setup() -> Setup {
    let h = start_processor(2).await;
    let shop = shop();
    let data = GeneratedShop::generate(ShopSpec {
        customers: CUSTOMERS,
        orders: ORDERS,
        now: T0,
        seed: 19,
    });
    let standin = standin(|o| o.bulk_polls = 2);
    standin.state.bulk.add_shop(shop.as_str(), data.clone());
    Setup {
        h,
        standin,
        shop,
        data,
    }
}

/// An ingress instance on the harness's topics and database with small batches and a short lease.
fn instance(s: &Setup) -> Binary {
    let mut binary = Binary::new("ingress", &s.h.prefix, &s.h.db_url, &s.standin.address);
    binary.env.extend([
        ("BACKFILL_BATCH_LINES", BATCH.to_string()),
        // Short enough for a quick take-over, long enough for renewals on a loaded Postgres.
        ("BACKFILL_LEASE_MS", "8000".to_owned()),
        ("BACKFILL_POLL_MS", "50".to_owned()),
    ]);
    binary
}

/// The shop's backfill row: phase, lines done, lease owner.
async fn row(db: &PgPool, shop: &MerchantId) -> (String, i64, Option<String>) {
    sqlx::query_as(
        "SELECT phase, lines_done, lease_owner FROM backfill_runs WHERE merchant_id = $1",
    )
    .bind(shop.as_str())
    .fetch_optional(db)
    .await
    .expect("postgres answers")
    .unwrap_or_else(|| ("none".into(), 0, None))
}

async fn installed_and_part_way(s: &Setup, first: &mut Binary, lines: i64) {
    first.start();
    first.wait_healthy().await;
    let answer = install(&first.address, &s.shop).await;
    assert_eq!(answer["backfill"], "started", "{answer}");
    let again = install(&first.address, &s.shop).await;
    assert_eq!(
        again["backfill"], "running",
        "a second open starts nothing: {again}"
    );
    eventually(
        "the install backfill part-way",
        Duration::from_secs(180),
        async || row(&s.h.db, &s.shop).await.1 >= lines,
    )
    .await;
}

#[actix_web::test]
async fn a_killed_instances_install_backfill_is_finished_by_exactly_one_new_instance() {
    let s = setup().await;
    let mut first = instance(&s);
    installed_and_part_way(&s, &mut first, 2_000).await;
    first.kill_9();
    let (phase, at_kill, holder) = row(&s.h.db, &s.shop).await;
    assert!(
        phase == "downloading" && (at_kill as u64) < ORDERS && holder.is_some(),
        "killed part-way, holding the lease: {phase} at line {at_kill}, {holder:?}"
    );

    // Two instances start at once; the dead one's lease still runs for a moment.
    let (mut second, mut third) = (instance(&s), instance(&s));
    second.start();
    third.start();
    eventually(
        "the backfill completed by a new instance",
        Duration::from_secs(300),
        async || row(&s.h.db, &s.shop).await.0 == "completed",
    )
    .await;
    assert_eq!(
        row(&s.h.db, &s.shop).await.1 as u64,
        ORDERS,
        "every line read"
    );
    eventually(
        "the lease given up at the end",
        Duration::from_secs(10),
        async || row(&s.h.db, &s.shop).await.2.is_none(),
    )
    .await;
    assert_eq!(
        s.standin.state.bulk.operations_started(),
        1,
        "the same bulk operation was continued"
    );
    eventually(
        "every customer as the oracle computes them",
        Duration::from_secs(120),
        async || engine(&s.h, &s.shop).await == oracle(&s.data.orders),
    )
    .await;
    // Only what the killed instance produced after its last checkpoint went out twice: had both new instances
    // continued, the rest of the shop would be on the topic twice.
    let orders_on_topic = record_count(&brokers(), &s.h.topics.orders_create).await as u64;
    assert!(
        orders_on_topic <= ORDERS + BATCH,
        "{orders_on_topic} order records for {ORDERS} orders; killed at line {at_kill}"
    );
    assert!(second.terminate() && third.terminate(), "both stop cleanly");
}

#[actix_web::test]
async fn a_stopped_instance_pauses_its_backfill_and_gives_the_lease_up() {
    let s = setup().await;
    let mut first = instance(&s);
    // A long lease: the next instance continues at once only because the stop released it.
    first.env.push(("BACKFILL_LEASE_MS", "600000".to_owned()));
    installed_and_part_way(&s, &mut first, 1_000).await;
    assert!(
        first.terminate(),
        "the stop finishes within its grace and exits 0"
    );
    let (phase, at_stop, holder) = row(&s.h.db, &s.shop).await;
    assert!(
        phase == "downloading" && (at_stop as u64) < ORDERS,
        "paused part-way: {phase} at line {at_stop}"
    );
    assert_eq!(holder, None, "the lease was released");

    let mut next = instance(&s);
    next.env.push(("BACKFILL_LEASE_MS", "600000".to_owned()));
    next.start();
    eventually(
        "the backfill completed by the next instance",
        Duration::from_secs(300),
        async || row(&s.h.db, &s.shop).await.0 == "completed",
    )
    .await;
    eventually(
        "every customer as the oracle computes them",
        Duration::from_secs(120),
        async || engine(&s.h, &s.shop).await == oracle(&s.data.orders),
    )
    .await;
    assert_eq!(s.standin.state.bulk.operations_started(), 1);
}

#[actix_web::test]
async fn one_owner_holds_a_backfill_until_its_lease_runs_out() {
    use loyalnest_rfm::backfill::lease::Leases;
    let db = PgPool::connect(&crate::helpers::fresh_database().await)
        .await
        .expect("postgres");
    let ttl = Duration::from_millis(400);
    let (a, b) = (Leases::new(db.clone(), ttl), Leases::new(db.clone(), ttl));
    let shop = shop();
    assert!(
        a.claim_for_start(&shop).await.unwrap(),
        "A claims a new shop"
    );
    assert!(
        !b.claim_for_start(&shop).await.unwrap(),
        "B cannot while A's lease runs"
    );
    assert!(!b.claim_unfinished(&shop).await.unwrap());
    assert!(a.renew(&shop).await.unwrap(), "A renews its own lease");
    // Without renewals, A's lease runs out and B takes the backfill over; A then finds it lost.
    eventually("A's lease to expire", Duration::from_secs(10), async || {
        b.claim_unfinished(&shop).await.unwrap()
    })
    .await;
    assert!(!a.renew(&shop).await.unwrap(), "A's lease is lost");
    a.release(&shop).await.unwrap();
    assert!(
        !a.claim_for_start(&shop).await.unwrap(),
        "A's release did not free B's lease"
    );
    b.release(&shop).await.unwrap();
    assert!(
        a.claim_unfinished(&shop).await.unwrap(),
        "a released backfill is claimed at once"
    );
}
