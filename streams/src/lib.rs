//! The vocabulary and plumbing between services: event schemas, topic names, identifiers, and the Kafka side of
//! every process: the producer (`sink`), the processor's consumer-group member (`source`), the dead-letter topic
//! (`dlq`) and its replay (`replay`), and the reader of a topic's tail (`tail`).

pub mod admin;
pub mod client_props;
pub mod dlq;
pub mod events;
pub mod ids;
pub mod lag;
pub mod metric_names;
pub mod outputs;
pub mod replay;
pub mod sink;
pub mod source;
pub mod tail;
pub mod topics;
pub mod traceparent;
pub mod zeroing;

pub use events::{DecodeError, InputEvent, InputKind, SCHEMA_VERSION};
pub use ids::{event_key, MerchantId};
pub use sink::{EventSink, ProduceError, SinkConfig};
pub use topics::Topics;
