//! Publishing what a batch changed: Kafka outputs and Postgres rows, both idempotent by customer version.
//! The caller stores the batch's offsets only after `publish` returned, so a crash in between replays the batch
//! and the replay finds its records and rows already there (Postgres) or carrying the same ids (Kafka).

use std::time::Duration;

use actors::{Change, Outcome};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use streams::outputs::{
    output_event_id, ChurnRiskDetected, RfmTask, RfmUpdated, ScoreOut, SegmentMove,
};
use streams::sink::{EventSink, Outgoing};
use streams::{ProduceError, Topics, SCHEMA_VERSION};

use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Publisher {
    pub sink: EventSink,
    pub topics: Topics,
    pub store: Option<Store>,
}

/// One encoded record, owned so many can be in flight at once.
struct Record {
    topic: String,
    key: String,
    payload: Vec<u8>,
    trace_id: String,
}

fn time(t: functions::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix(), 0).unwrap_or_default()
}

fn encode<T: serde::Serialize>(topic: &str, change: &Change, value: &T) -> Record {
    Record {
        topic: topic.to_owned(),
        key: change.merchant.to_string(),
        // Plain structs of strings and numbers always serialise.
        payload: serde_json::to_vec(value).unwrap_or_default(),
        trace_id: change.trace_id.clone(),
    }
}

impl Publisher {
    fn records(&self, change: &Change) -> Vec<Record> {
        let (merchant, customer_id, version) =
            (&change.merchant, change.customer_id, change.version);
        let mut records = vec![encode(
            &self.topics.rfm_updated,
            change,
            &RfmUpdated {
                event_id: output_event_id("rfm.updated", merchant, customer_id, version),
                schema_version: SCHEMA_VERSION,
                merchant_id: merchant.clone(),
                customer_id,
                version,
                segment: SegmentMove {
                    from: change.from_segment.clone(),
                    to: change.to_segment.clone(),
                },
                score: ScoreOut {
                    recency: change.rfm.recency,
                    frequency: change.rfm.frequency,
                    monetary: change.rfm.monetary,
                    score: f64::from(change.score_tenths) / 10.0,
                },
                lifecycle_stage: change.stage.as_str().to_owned(),
                occurred_at: time(change.occurred_at),
                trace_id: change.trace_id.clone(),
            },
        )];
        if let Some(risk) = change.churn_risk {
            records.push(encode(
                &self.topics.churn_risk_detected,
                change,
                &ChurnRiskDetected {
                    event_id: output_event_id(
                        "churn_risk.detected",
                        merchant,
                        customer_id,
                        version,
                    ),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id,
                    version,
                    risk_score: (risk * 1000.0).round() / 1000.0,
                    occurred_at: time(change.occurred_at),
                    trace_id: change.trace_id.clone(),
                },
            ));
        }
        if change.segment_changed() {
            let nudge_id = output_event_id("nudge", merchant, customer_id, version);
            records.push(encode(
                &self.topics.rfm_task,
                change,
                &RfmTask {
                    event_id: nudge_id.clone(),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id,
                    version,
                    task_type: "nudge".to_owned(),
                    nudge_id,
                    segment: change.to_segment.clone(),
                    variant: "A".to_owned(),
                    locale: change.locale.clone(),
                    trace_id: change.trace_id.clone(),
                },
            ));
        }
        records
    }

    async fn send(&self, r: &Record) -> Result<(), ProduceError> {
        let headers = [("trace_id", r.trace_id.as_str())];
        self.sink
            .send(Outgoing {
                topic: &r.topic,
                key: &r.key,
                payload: &r.payload,
                headers: &headers,
            })
            .await
            .map(drop)
    }

    /// Enqueues the outcome's Kafka records now, in order, and returns a future that completes once every record
    /// is acknowledged and every row written. Starting several outcomes before awaiting them pipelines batches
    /// while keeping each partition's records in the order they were produced.
    pub fn start(&self, outcome: Outcome) -> impl std::future::Future<Output = ()> + 'static {
        let records: Vec<Record> = outcome
            .changes
            .iter()
            .flat_map(|c| self.records(c))
            .collect();
        let deliveries: Vec<_> = records
            .iter()
            .map(|r| {
                let headers = [("trace_id", r.trace_id.as_str())];
                let record = Outgoing {
                    topic: &r.topic,
                    key: &r.key,
                    payload: &r.payload,
                    headers: &headers,
                };
                self.sink.enqueue(record).ok()
            })
            .collect();
        let this = self.clone();
        async move {
            let mut failed = Vec::new();
            for (record, delivery) in records.into_iter().zip(deliveries) {
                let delivered = match delivery {
                    Some(d) => matches!(d.await, Ok(Ok(_))),
                    None => false,
                };
                if !delivered {
                    failed.push(record);
                }
            }
            this.resend(failed).await;
            this.write_rows(&outcome).await;
            metrics::counter!("processor_changes_total").increment(outcome.changes.len() as u64);
        }
    }

    /// Resends records until acknowledged. An output that landed but whose acknowledgement was lost becomes a
    /// duplicate with the same event id and version, which consumers discard.
    async fn resend(&self, mut pending: Vec<Record>) {
        let mut delay = Duration::from_millis(50);
        while !pending.is_empty() {
            let results = join_all(pending.iter().map(|r| self.send(r))).await;
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "output not acknowledged; retrying");
                metrics::counter!("processor_output_retries_total").increment(1);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            let mut failed = results.iter().map(Result::is_err);
            pending.retain(|_| failed.next().unwrap_or(false));
        }
    }

    async fn write_rows(&self, outcome: &Outcome) {
        let Some(store) = &self.store else { return };
        retry("write changes", || store.write_changes(&outcome.changes)).await;
        for (merchant, customer, event_id) in &outcome.redactions {
            retry("redact", || store.redact(merchant, *customer, event_id)).await;
        }
        for (merchant, customer, event_id) in &outcome.data_requests {
            retry("data request", || {
                store.record_data_request(merchant, *customer, event_id)
            })
            .await;
        }
    }
}

/// Retries a Postgres write with capped exponential backoff until it succeeds. The consumer is waiting on this,
/// so while Postgres is down consumption pauses instead of dropping rows.
async fn retry<F, Fut>(what: &'static str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(operation = what, error = %e, retry_in_ms = delay.as_millis() as u64, "postgres write failed");
                metrics::counter!("processor_store_retries_total").increment(1);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] ProduceError),
    #[error("publishing task failed: {0}")]
    Task(String),
}
