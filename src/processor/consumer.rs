//! The processor's Kafka consumer lives in `streams::source`; this name stays for the processor's modules.

pub use streams::source::*;
