//! HTTP routes, one file per area.

pub mod api;
pub mod dashboard;
pub mod gdpr;
pub mod health;
pub mod history;
pub mod nudge_experiments;
pub mod nudge_templates;
pub mod rfm_config;
pub mod rfm_lists;
pub mod rfm_movements;
pub mod rfm_preview;
pub mod settings_page;
pub mod shop_install;
mod socket;
pub mod stream;
pub mod webhooks;
pub mod widget;
pub mod widget_page;
pub mod widget_stream;
