//! Backpressure: the in-flight window of batches being published, and what the loop does when it cannot drain (DESIGN.md §6: "when a buffer is full the consumer pauses, it does not drop").
//!
//! While the window drains normally the loop just awaits its oldest batch. When that takes longer than `STALL`
//! (Postgres or the broker is down and the publishing tasks are retrying), every owned partition is paused and
//! the loop keeps asking the consumer for records while it waits: nothing arrives from paused partitions, but the
//! asking keeps the instance in its group (librdkafka leaves the group when the application stops polling for
//! `max.poll.interval.ms`) and lets rebalance callbacks run. Once the window has room again the partitions
//! resume from their positions (`rewind_to_position`), so nothing fetched before the pause is skipped.

use std::time::{Duration, Instant};

use super::publish::PublishError;
use super::Processor;

/// How long the oldest batch may take before consumption is paused rather than merely waiting.
const STALL: Duration = Duration::from_secs(1);

impl Processor {
    /// Starts publishing `outcome` behind what is already in flight (the dashboards see it now), then waits while
    /// more than `MAX_IN_FLIGHT` batches are publishing. `timestamps` and `events` are the records it covers, for
    /// the latency figures and the event count; none for a restore's chunk.
    pub(super) async fn publish(
        &mut self,
        outcome: actors::Outcome,
        timestamps: Vec<i64>,
        events: u64,
    ) -> Result<(), PublishError> {
        self.publish_traced(outcome, timestamps, events, Vec::new())
            .await
    }

    /// [`Processor::publish`], ending `spans` (the batch's exported trace spans) once the outcome is published.
    pub(super) async fn publish_traced(
        &mut self,
        outcome: actors::Outcome,
        timestamps: Vec<i64>,
        events: u64,
        spans: Vec<tracing::Span>,
    ) -> Result<(), PublishError> {
        if let Some(live) = &self.live {
            live.observe(&outcome);
        }
        let dead_letters = outcome.rejected.len() as u64;
        let churn_timestamps: Vec<i64> = outcome
            .changes
            .iter()
            .filter(|c| c.churn_risk.is_some())
            .filter_map(|c| c.event_ms)
            .collect();
        let publishing = self.publisher.start(outcome);
        // Timed inside the task, when its outputs are acknowledged and its rows written, not when the loop next
        // retires it: that waits for the next batch or tick and would add up to their interval to every figure.
        let stats = self.stats.clone();
        let done = tokio::task::spawn_local(async move {
            publishing.await;
            stats.record_latencies(&timestamps, &churn_timestamps);
            drop(spans);
        });
        self.in_flight.push_back(super::InFlight {
            done,
            events,
            dead_letters,
            tick: None,
        });
        self.settle(super::MAX_IN_FLIGHT).await
    }

    /// Retires every finished batch at the front of the window and waits, pausing consumption when the wait is
    /// long, until at most `keep` batches are in flight.
    pub(super) async fn settle(&mut self, keep: usize) -> Result<(), PublishError> {
        let mut stalled_since: Option<Instant> = None;
        loop {
            while self.in_flight.front().is_some_and(|b| b.done.is_finished()) {
                if let Some(mut batch) = self.in_flight.pop_front() {
                    let result = (&mut batch.done).await;
                    self.retire(result, &batch)?;
                }
            }
            if self.in_flight.len() <= keep {
                self.unpause(stalled_since);
                return Ok(());
            }
            let Some(front) = self.in_flight.front_mut() else {
                return Ok(());
            };
            // A handle that completed here is never polled again; its batch is retired below.
            let completed = if self.paused {
                tokio::select! {
                    result = &mut front.done => Some(result),
                    // A record fetched before the pause took effect: dropped unstored, since every partition is
                    // rewound to its position when it resumes (`unpause`).
                    _ = self.source.next() => None,
                }
            } else {
                match tokio::time::timeout(STALL, &mut front.done).await {
                    Ok(result) => Some(result),
                    Err(_) => {
                        stalled_since = Some(Instant::now());
                        self.pause_owned();
                        None
                    }
                }
            };
            if let Some(result) = completed {
                if let Some(batch) = self.in_flight.pop_front() {
                    self.retire(result, &batch)?;
                }
            }
        }
    }

    /// Counts a batch that left the window. One whose publishing task failed stops the processor instead: a
    /// snapshot after it would lose its effects, and the restart replays them.
    fn retire(
        &self,
        result: Result<(), tokio::task::JoinError>,
        batch: &super::InFlight,
    ) -> Result<(), PublishError> {
        use std::sync::atomic::Ordering::SeqCst;
        result.map_err(|e| PublishError::Task(e.to_string()))?;
        self.stats.events.fetch_add(batch.events, SeqCst);
        self.stats
            .dead_lettered
            .fetch_add(batch.dead_letters, SeqCst);
        if let Some(tick) = batch.tick {
            self.stats.last_tick.store(tick, SeqCst);
        }
        Ok(())
    }

    fn pause_owned(&mut self) {
        let owned: Vec<i32> = self.positions.keys().copied().collect();
        tracing::warn!(partitions = ?owned, in_flight = self.in_flight.len(), "outputs not completing; consumption paused");
        self.source.set_paused(&owned, true);
        self.paused = true;
        metrics::counter!(streams::metric_names::PAUSES).increment(1);
        metrics::gauge!(streams::metric_names::PAUSED).set(1.0);
    }

    fn unpause(&mut self, stalled_since: Option<Instant>) {
        if !self.paused {
            return;
        }
        let owned: Vec<i32> = self
            .positions
            .keys()
            .filter(|p| !self.config_wait.contains_key(p))
            .copied()
            .collect();
        self.source.set_paused(&owned, false);
        for partition in &owned {
            self.rewind_to_position(*partition);
        }
        self.paused = false;
        let paused_ms = stalled_since.map_or(0, |s| s.elapsed().as_millis() as u64);
        tracing::info!(partitions = ?owned, paused_ms, "outputs completing again; consumption resumed");
        metrics::gauge!(streams::metric_names::PAUSED).set(0.0);
    }
}
