//! Topic administration: creating the topics the engine uses when they do not exist yet.
//!
//! Production clusters usually create topics through their own tooling; `serve` does it at start-up unless
//! `KAFKA_CREATE_TOPICS=false`, so a developer's broker works without a separate step. All input topics get the
//! same partition count: a merchant's events must land on the same partition number in every input topic, because
//! one partition actor owns them all.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::topics::Topics;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("kafka admin: {0}")]
    Kafka(#[from] KafkaError),
    #[error("could not create topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Creates every topic of `topics` that does not exist, with `partitions` partitions and `replication` replicas.
pub async fn ensure_topics(
    brokers: &str,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<(), AdminError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = topics
        .all()
        .into_iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(AdminError::Create { topic, code }),
        }
    }
    Ok(())
}
