//! Topic administration: creating the topics the engine uses when they do not exist yet.
//!
//! Production clusters usually create topics through their own tooling; `serve` does it at start-up unless
//! `KAFKA_CREATE_TOPICS=false`, so a developer's broker works without a separate step. All input topics get the
//! same partition count: a merchant's events must land on the same partition number in every input topic, because
//! one partition actor owns them all.
//!
//! Input topics are created with an explicit retention, [`INPUT_RETENTION_MS`] (seven days): long enough to
//! replay after any outage the snapshots cover, short enough that what they hold of a shop does not outlive its
//! erasure by much. What they hold is sealed under the shop's own data key anyway, which `shop/redact` destroys.
//! Output topics keep the broker's default. Operators who create topics themselves should set the same.

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

/// How long input topics keep records: seven days.
pub const INPUT_RETENTION_MS: i64 = 7 * 24 * 3_600 * 1_000;

/// Creates every topic of `topics` that does not exist, with `partitions` partitions and `replication` replicas.
pub async fn ensure_topics(
    brokers: &str,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<(), AdminError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::client_props::apply(ClientConfig::new().set("bootstrap.servers", brokers))
            .create()?;
    let inputs = topics.inputs();
    let retention = INPUT_RETENTION_MS.to_string();
    let new: Vec<NewTopic> = topics
        .all()
        .into_iter()
        .map(|t| {
            let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(replication));
            if inputs.contains(&t) {
                topic.set("retention.ms", &retention)
            } else {
                topic
            }
        })
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
