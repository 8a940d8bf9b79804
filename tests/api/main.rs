//! End-to-end tests against the real app, a real Kafka-protocol broker (Tansu) and a real Redis.
//! One test binary, as in zero2prod: the app starts in-process on port 0 with fresh topics per test.

mod backfill;
mod backfill_resume;
mod browser;
mod crypto_shred;
mod dashboard;
mod data_request;
mod demo;
mod erasure;
mod erasure_order;
mod harness;
mod helpers;
mod imports;
mod limits;
mod live;
mod merchant_config;
mod nudge_experiments;
mod nudge_templates;
mod nudges;
mod otlp;
mod processor;
mod processor_faults;
mod recovery;
mod reseal;
mod score_cache;
mod settings_browser;
mod shopify_sync;
mod snapshot_store;
mod telemetry;
mod webhooks;
mod webhooks_faults;
mod webhooks_forgery;
mod widget;
mod widget_browser;
mod widget_stream;
