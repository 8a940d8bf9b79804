//! `bench --live`: the pipeline's sustained rate while records arrive at partitions that are already live, beside
//! the quiet catch-up of the default mode. In the catch-up the whole backlog lies below the frontier seen at
//! assignment, so each partition publishes one net change per customer; here the processor is assigned empty topics
//! first, so every event that changes a customer is published as it is applied (`rfm.updated`, and `rfm.task` for a
//! segment move). The report counts what reached the output topics, so the figure cannot be bought by publishing
//! less.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::configuration::Settings;
use crate::processor::ProcessorStats;

/// What the live run published, read off the output topics' end offsets after it. Tansu 0.6 can report an end a
/// few records short of the last stored one (docs/PERFORMANCE.md, "The two lost 200s"), so on Tansu these counts
/// may be low by a few records per partition, never high.
#[derive(Debug, Serialize)]
pub struct LiveReport {
    /// Records on `rfm.updated`: one per change of a customer's published evaluation (an order that changes the
    /// scores or the segment; recency timers firing during the run add theirs).
    pub rfm_updated: i64,
    /// Records on `rfm.task`: one per segment move.
    pub rfm_task: i64,
    /// `rfm_updated` per event produced.
    pub updated_per_event: f64,
}

/// Waits until the group has assigned partitions and none is restoring: from then on every record is live.
pub async fn until_live(stats: &ProcessorStats, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    while !stats.caught_up.load(Ordering::SeqCst) {
        anyhow::ensure!(
            started.elapsed() < limit,
            "the processor was not assigned its partitions within {limit:?}"
        );
        ticker.tick().await;
    }
    Ok(())
}

/// Sums the end offsets of the output topics (the run's topics are fresh, so they start at 0).
pub async fn published(settings: &Settings, events: u64) -> anyhow::Result<LiveReport> {
    let brokers = settings.kafka_brokers.clone();
    let topics = [
        settings.topics.rfm_updated.clone(),
        settings.topics.rfm_task.clone(),
    ];
    let [rfm_updated, rfm_task] =
        tokio::task::spawn_blocking(move || -> anyhow::Result<[i64; 2]> {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()?;
            let end = |topic: &str| -> anyhow::Result<i64> {
                let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
                let mut total = 0;
                for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                    for p in t.partitions() {
                        total += consumer
                            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))?
                            .1;
                    }
                }
                Ok(total)
            };
            Ok([end(&topics[0])?, end(&topics[1])?])
        })
        .await??;
    Ok(LiveReport {
        rfm_updated,
        rfm_task,
        updated_per_event: rfm_updated as f64 / events.max(1) as f64,
    })
}
