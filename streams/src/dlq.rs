//! The dead-letter topic (`rfm.dlq`): records the engine could not decode, copied as they came with headers that
//! say where they came from and why, so an operator can inspect and replay them (`loyalnest-rfm replay`).
//!
//! A dead letter is part of the batch that produced it: its offset is committed only once the letter is
//! acknowledged, so one is never lost to a broker hiccup. Decoding is deterministic, so the record is not retried;
//! only the write is.

use std::time::Duration;

use crate::outputs::dlq_headers;
use crate::sink::{EventSink, Outgoing};
use crate::ProduceError;

/// A record refused by its partition actor, on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
}

impl DeadLetter {
    /// One attempt at writing the letter to `dlq`.
    pub async fn send(&self, sink: &EventSink, dlq: &str) -> Result<(), ProduceError> {
        let (partition, offset) = (self.partition.to_string(), self.offset.to_string());
        let key = self
            .key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        sink.send(Outgoing {
            topic: dlq,
            key: &key,
            payload: &self.payload,
            headers: &[
                (dlq_headers::REASON, self.reason.as_str()),
                (dlq_headers::ATTEMPTS, "1"),
                (dlq_headers::TOPIC, self.topic.as_str()),
                (dlq_headers::PARTITION, &partition),
                (dlq_headers::OFFSET, &offset),
            ],
        })
        .await
        .map(drop)
    }

    /// Writes the letter, retrying with capped exponential backoff until the broker acknowledges it. The caller's
    /// batch (and so its offset) waits meanwhile; a long wait pauses consumption upstream.
    pub async fn deliver(&self, sink: &EventSink, dlq: &str) {
        // The reason is a decoder's message, which can quote the payload: not logged above debug.
        tracing::warn!(topic = %self.topic, partition = self.partition, offset = self.offset, "record sent to the dead-letter topic");
        tracing::debug!(topic = %self.topic, offset = self.offset, reason = %self.reason, "dead letter reason");
        metrics::counter!(crate::metric_names::DLQ_SIZE, "topic" => self.topic.clone())
            .increment(1);
        let mut letter = std::borrow::Cow::Borrowed(self);
        let mut delay = Duration::from_millis(50);
        while let Err(e) = letter.send(sink, dlq).await {
            if too_large(&e) && !letter.payload.is_empty() {
                // The record stays in its own topic at its offset; the letter says where, without a copy that no
                // retry could ever deliver.
                letter = std::borrow::Cow::Owned(letter.without_payload());
                continue;
            }
            tracing::warn!(topic = %self.topic, partition = self.partition, offset = self.offset, error = %e, retry_in_ms = delay.as_millis() as u64, "dead letter not acknowledged; retrying");
            metrics::counter!(crate::metric_names::DEAD_LETTER_RETRIES).increment(1);
            crate::metric_names::error("processor", "dead_letter_delivery");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn without_payload(&self) -> DeadLetter {
        DeadLetter {
            payload: Vec::new(),
            reason: format!(
                "{} (payload of {} bytes not copied: too large for the dead-letter topic)",
                self.reason,
                self.payload.len()
            ),
            ..self.clone()
        }
    }
}

fn too_large(error: &ProduceError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        error,
        ProduceError::NotDelivered(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
        ))
    )
}
