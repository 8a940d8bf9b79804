//! The records a change publishes on Kafka, encoded where the change is computed (in the partition actor), so
//! the consumer loop only hands finished bytes to the producer; and the one record a restore reads back
//! (`rfm.updated`, decoded by [`published_version`]), kept beside its encoder so the two cannot drift apart.

use chrono::{DateTime, Utc};
use functions::NudgeKind;
use streams::outputs::{
    output_event_id, ChurnRiskDetected, RfmTask, RfmUpdated, ScoreOut, SegmentMove,
};
use streams::sink::EventSink;
use streams::{MerchantId, Topics, SCHEMA_VERSION};

use crate::experiments::NudgeArm;
use crate::vocab::{Change, PublishedVersion};
pub use crate::vocab::{Enqueued, Record};

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
        traceparent: change.traceparent.clone(),
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

/// The Kafka records one change publishes outside any experiment (see [`records_with`]).
pub fn records(topics: &Topics, change: &Change) -> Vec<Record> {
    let arm = NudgeKind::of_move(&change.from_segment, &change.to_segment, change.stage)
        .map(NudgeArm::plain);
    records_with(topics, change, arm.as_ref())
}

/// The Kafka records one change publishes: `rfm.updated` always, `churn_risk.detected` on entering At-Risk,
/// `rfm.task` (a nudge, in the arm it was assigned, a held-out one included) when the change fires a nudge.
pub fn records_with(topics: &Topics, change: &Change, arm: Option<&NudgeArm>) -> Vec<Record> {
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
    if let Some(arm) = arm {
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
                kind: arm.kind.as_str().to_owned(),
                experiment_id: arm.experiment_id.as_deref().map(str::to_owned),
                variant: arm.variant.to_string(),
                locale: change.locale.clone(),
                trace_id: change.trace_id.clone(),
            },
        ));
    }
    records
}

/// The version an `rfm.updated` payload announces, as a restore takes it over; `None` for a payload that does not
/// parse (another producer's record) or names an unknown lifecycle stage.
pub fn published_version(payload: &[u8]) -> Option<PublishedVersion> {
    let record: RfmUpdated = serde_json::from_slice(payload).ok()?;
    Some(PublishedVersion {
        customer_id: record.customer_id,
        version: record.version,
        from_segment: record.segment.from,
        occurred_at: functions::Timestamp(record.occurred_at.timestamp()),
        trace_id: record.trace_id,
        rfm: functions::Rfm::new(
            record.score.recency,
            record.score.frequency,
            record.score.monetary,
        ),
        stage: functions::LifecycleStage::parse(&record.lifecycle_stage)?,
        segment: record.segment.to,
        merchant: record.merchant_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::{LifecycleStage, Money, Rfm, Timestamp};

    fn change() -> Change {
        Change {
            merchant: MerchantId::parse("round-trip.myshopify.com").unwrap(),
            customer_id: 77,
            version: 12,
            from_segment: "new".into(),
            to_segment: "at_risk".into(),
            rfm: Rfm::new(2, 1, 3),
            score_tenths: 19,
            stage: LifecycleStage::OneTimeBuyer,
            orders: 1,
            net_spend: Money::parse("123.45", 2).unwrap(),
            currency_exponent: 2,
            last_order: Some(Timestamp(1_780_000_000)),
            churn_risk: Some(0.8125),
            occurred_at: Timestamp(1_780_086_400),
            trace_id: "order-9".into(),
            locale: Some("es".into()),
            event_ms: None,
            traceparent: None,
            order_added: None,
            points: 0,
        }
    }

    #[test]
    fn the_published_version_decodes_from_the_bytes_the_actor_encodes() {
        let topics = Topics::default();
        let change = change();
        let records = records(&topics, &change);
        let topics_written: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(
            topics_written,
            [
                &topics.rfm_updated,
                &topics.churn_risk_detected,
                &topics.rfm_task
            ]
        );
        assert!(records.iter().all(|r| r.key == change.merchant.as_str()));
        let version = published_version(&records[0].payload).expect("rfm.updated decodes");
        assert_eq!(
            version,
            PublishedVersion {
                merchant: change.merchant.clone(),
                customer_id: 77,
                version: 12,
                from_segment: "new".into(),
                segment: "at_risk".into(),
                rfm: Rfm::new(2, 1, 3),
                stage: LifecycleStage::OneTimeBuyer,
                occurred_at: Timestamp(1_780_086_400),
                trace_id: "order-9".into(),
            }
        );
        for other in &records[1..] {
            assert_eq!(published_version(&other.payload), None, "{}", other.topic);
        }
        assert_eq!(published_version(b"{not json"), None);
    }
}
