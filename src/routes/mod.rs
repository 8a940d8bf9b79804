//! HTTP routes, one file per area.

pub mod api;
pub mod dashboard;
pub mod gdpr;
pub mod health;
pub mod nudge_experiments;
pub mod nudge_templates;
pub mod stream;
pub mod webhooks;
pub mod widget;
pub mod widget_page;
pub mod widget_stream;
