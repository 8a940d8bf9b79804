//! The `loyalnest-rfm` service: configuration, HTTP routes, Shopify adapters, and the wiring that turns them into a
//! running process. The binary in `main.rs` is a thin CLI over this library so tests can start the same app
//! in-process.

pub mod auth;
pub mod backfill;
pub mod bench;
pub mod configuration;
pub mod customer_list;
pub mod dedupe;
pub mod demo;
pub mod directory;
pub mod experiments;
pub mod gdpr;
pub mod history_cli;
pub mod imports;
pub mod limits;
pub mod live;
pub mod memory;
pub mod merchant_config;
pub mod mock_broker;
pub mod nudges;
pub mod otel;
pub mod pii;
pub mod preview;
pub mod probes;
pub mod processor;
pub mod read_model;
pub mod redis_link;
pub mod reseal;
pub mod routes;
pub mod runtime;
pub mod score_cache;
pub mod shop_keys;
pub mod shopify;
pub mod snapshots;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod widget;
pub use streams::zeroing;
