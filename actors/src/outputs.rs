//! The records a change publishes on Kafka, encoded where the change is computed (in the partition actor), so
//! the consumer loop only hands finished bytes to the producer.

use chrono::{DateTime, Utc};
use streams::outputs::{
    output_event_id, ChurnRiskDetected, RfmTask, RfmUpdated, ScoreOut, SegmentMove,
};
use streams::sink::{DeliveryFuture, EventSink, Outgoing};
use streams::{MerchantId, Topics, SCHEMA_VERSION};

use crate::partition::Change;

/// One encoded record, owned so many can be in flight at once.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub trace_id: String,
}

fn time(t: functions::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix(), 0).unwrap_or_default()
}

/// The key of every output record: the merchant, as the read-back (which filters by it) expects.
pub fn record_key(merchant: &MerchantId) -> &str {
    merchant.as_str()
}

fn encode<T: serde::Serialize>(topic: &str, change: &Change, value: &T) -> Record {
    Record {
        topic: topic.to_owned(),
        key: record_key(&change.merchant).to_owned(),
        // Plain structs of strings and numbers always serialise.
        payload: serde_json::to_vec(value).unwrap_or_default(),
        trace_id: change.trace_id.clone(),
    }
}

impl Record {
    /// The record as the producer takes it; `headers` is built by the caller because it borrows from `self`.
    pub fn outgoing<'a>(&'a self, headers: &'a [(&'a str, &'a str)]) -> Outgoing<'a> {
        Outgoing {
            topic: &self.topic,
            key: &self.key,
            payload: &self.payload,
            headers,
        }
    }

    /// The headers every output record carries.
    pub fn headers(&self) -> [(&str, &str); 1] {
        [("trace_id", self.trace_id.as_str())]
    }
}

/// The records of an outcome as the actor handed them to the producer, in order: each one's acknowledgement, or
/// `None` where the producer's local queue was full (the publisher sends those again).
pub struct Enqueued(pub Vec<Option<DeliveryFuture>>);

impl std::fmt::Debug for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enqueued({} records)", self.0.len())
    }
}

/// Enqueues `records` on `sink` in order, without waiting.
pub fn enqueue(sink: &EventSink, records: &[Record]) -> Enqueued {
    Enqueued(
        records
            .iter()
            .map(|r| sink.enqueue(r.outgoing(&r.headers())).ok())
            .collect(),
    )
}

/// The Kafka records one change publishes: `rfm.updated` always, `churn_risk.detected` on entering At-Risk,
/// `rfm.task` (a nudge) when the segment changed.
pub fn records(topics: &Topics, change: &Change) -> Vec<Record> {
    let (merchant, customer_id, version) = (&change.merchant, change.customer_id, change.version);
    let mut records = vec![encode(
        &topics.rfm_updated,
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
            &topics.churn_risk_detected,
            change,
            &ChurnRiskDetected {
                event_id: output_event_id("churn_risk.detected", merchant, customer_id, version),
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
        let nudge_id = crate::customer::nudge_id(merchant, customer_id, version);
        records.push(encode(
            &topics.rfm_task,
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
                variant: crate::customer::DEFAULT_VARIANT.to_owned(),
                locale: change.locale.clone(),
                trace_id: change.trace_id.clone(),
            },
        ));
    }
    records
}
