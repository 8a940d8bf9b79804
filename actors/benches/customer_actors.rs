//! What the virtual customer actors cost: heap bytes per active actor and per pending nudge (a counting
//! allocator, printed before the timings), nudges the desk takes per second, and one activation (watch, push,
//! drop) end to end. `cargo bench -p loyalnest-actors --bench customer_actors`; results in docs/PERFORMANCE.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::customer::{CustomerKey, PendingNudge};
use actors::nudges::{NudgeDesk, NudgeDeskConfig};
use actors::SystemClock;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use functions::{LifecycleStage, Money, Rfm, Timestamp};
use streams::MerchantId;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SHOP: &str = "bench.myshopify.com";

fn nudge(customer_id: u64, version: u32) -> PendingNudge {
    let change = actors::Change {
        merchant: MerchantId::parse(SHOP).unwrap(),
        customer_id,
        version,
        from_segment: "new".into(),
        to_segment: "loyal".into(),
        rfm: Rfm::new(4, 2, 3),
        score_tenths: 30,
        stage: LifecycleStage::RepeatBuyer,
        orders: 2,
        net_spend: Money::from_minor(9_000),
        currency_exponent: 2,
        last_order: None,
        churn_risk: None,
        occurred_at: Timestamp(1_790_000_000),
        trace_id: format!("evt-{customer_id}-{version}"),
        locale: Some("en".into()),
        event_ms: None,
        traceparent: None,
        order_added: None,
        points: 0,
    };
    PendingNudge::of(&change).expect("the segment moved")
}

fn key(customer_id: u64) -> CustomerKey {
    CustomerKey {
        merchant: MerchantId::parse(SHOP).unwrap(),
        customer_id,
    }
}

fn desk(max_pending: usize) -> NudgeDesk {
    NudgeDeskConfig {
        max_pending,
        linger: Duration::ZERO,
        ..NudgeDeskConfig::default()
    }
    .build(Arc::new(SystemClock))
}

/// Heap held per pending nudge and per active actor with one watcher, each over `n` customers. Both desks stay
/// alive to the end: a dropped desk frees its table on its own thread, which would race the second count.
async fn footprint(n: u64) {
    let before = LIVE.load(Ordering::SeqCst);
    let pending = desk(n as usize * 2);
    for chunk in (0..n).collect::<Vec<_>>().chunks(4096) {
        pending
            .offer(chunk.iter().map(|c| nudge(*c, 2)).collect())
            .await;
    }
    assert_eq!(pending.stats().await.pending, n as usize);
    let held = LIVE.load(Ordering::SeqCst) - before;
    println!(
        "pending nudge: {:.1} B each ({n} held)",
        held as f64 / n as f64
    );

    let actors = desk(16);
    // The bench's own list of watches is allocated before counting.
    let mut watches = Vec::with_capacity(n as usize);
    let before = LIVE.load(Ordering::SeqCst);
    for c in 0..n {
        watches.push(actors.watch(key(c)).await.expect("watch"));
    }
    actors.settle().await;
    assert_eq!(actors.stats().await.active, n as usize);
    let held = LIVE.load(Ordering::SeqCst) - before;
    println!(
        "active customer actor with one watcher: {:.1} B each ({n} active)",
        held as f64 / n as f64
    );
    drop((watches, actors, pending));
}

fn benches(c: &mut Criterion) {
    let system = actix::System::new();
    system.block_on(footprint(20_000));

    let mut group = c.benchmark_group("nudge_desk");
    group.throughput(Throughput::Elements(4096));
    group.bench_function("offer 4096 nudges", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                // Past the cap from the fourth offer on, so evictions are in the figure.
                let desk = desk(16_384);
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    let base = (i % 64) * 4096;
                    let nudges = (base..base + 4096)
                        .map(|c| nudge(c, i as u32 + 2))
                        .collect();
                    let start = Instant::now();
                    desk.offer(nudges).await;
                    // The offer returns once queued; a round trip behind it times the holding too.
                    desk.stats().await;
                    spent += start.elapsed();
                }
                spent
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("watch, push one nudge, drop", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let desk = desk(100_000);
                let start = Instant::now();
                for c in 0..iters {
                    let mut watching = desk.watch(key(c)).await.expect("watch");
                    desk.offer(vec![nudge(c, 2)]).await;
                    watching.updates.recv().await.expect("pushed");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(customer_actors, benches);
criterion_main!(customer_actors);
