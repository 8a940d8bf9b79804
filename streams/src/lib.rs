//! Event schemas and Kafka plumbing.
