//! The vocabulary and plumbing between services: event schemas, topic names, identifiers, and the Kafka producer
//! and consumer settings every process shares.

pub mod admin;
pub mod dlq;
pub mod events;
pub mod ids;
pub mod outputs;
pub mod sink;
pub mod topics;

pub use events::{DecodeError, InputEvent, InputKind, SCHEMA_VERSION};
pub use ids::{event_key, MerchantId};
pub use sink::{EventSink, ProduceError, SinkConfig};
pub use topics::Topics;
