//! The readiness conditions each role registers: the producer reaches a broker (ingress), Redis and Postgres
//! answer, the processor owns partitions and none of them is restoring.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use streams::EventSink;

use super::readiness::Check;
use crate::processor::ProcessorStats;
use crate::redis_link::RedisLink;

/// The producer can fetch the metadata of `topic` (one topic, not the whole cluster's).
pub fn kafka_producer(sink: EventSink, topic: String) -> Check {
    Check::new("kafka", move || {
        let (sink, topic) = (sink.clone(), topic.clone());
        async move {
            let reachable = tokio::task::spawn_blocking(move || {
                sink.broker_reachable(&topic, Duration::from_millis(1_500))
            })
            .await
            .unwrap_or(false);
            reachable
                .then_some(())
                .ok_or_else(|| "no broker answered a metadata request".to_owned())
        }
    })
}

/// Redis answers `PING`.
pub fn redis(link: RedisLink) -> Check {
    Check::new("redis", move || {
        let link = link.clone();
        async move { link.query::<String>(&redis::cmd("PING")).await.map(drop) }
    })
}

/// Postgres runs `SELECT 1` through the pool (a connection can be had, the server answers).
pub fn postgres(pool: sqlx::PgPool) -> Check {
    Check::new("postgres", move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
}

/// The processor owns partitions and has restored every one of them, so what arrives is published live. A
/// processor beyond the partition count owns none and never turns ready (scale processors up to the partitions).
pub fn partitions(stats: Arc<ProcessorStats>) -> Check {
    Check::new("partitions", move || {
        let stats = stats.clone();
        async move {
            let owned = stats.partitions_owned.load(Ordering::SeqCst);
            if owned == 0 {
                Err("no partition assigned".to_owned())
            } else if !stats.caught_up.load(Ordering::SeqCst) {
                Err(format!("{owned} partitions owned, some still restoring"))
            } else {
                Ok(())
            }
        }
    })
}
