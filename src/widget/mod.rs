//! Nudge delivery to the storefront (issue 17): the shopper's widget gets a short-lived token through Shopify's
//! App Proxy, then reads its customer's nudges over a WebSocket (or REST) and reports what the shopper did.
//!
//! The pieces: [`proxy`] verifies App Proxy requests, [`token`] mints and verifies widget tokens under a key of
//! their own, [`render`] is the seam where a nudge becomes words, [`names`] opens the first name for the greeting,
//! [`events`] parses and stores the shopper's reports, and [`relay`] carries nudges and erasures to every instance.
//! The HTTP handlers are in `routes::widget` and `routes::widget_stream`; they share a [`WidgetState`].

pub mod events;
pub mod names;
pub mod proxy;
pub mod relay;
pub mod render;
pub mod token;

use crate::nudges::render::NudgeRenderer;
use crate::nudges::templates::TemplateStore;
use std::net::IpAddr;
use std::sync::Arc;

use actors::customer::CustomerKey;
use actors::nudges::{NudgeDesk, NudgeDeskConfig};
use dashmap::DashMap;

use crate::configuration::Settings;
use crate::experiments::ledger::Ledger;
use crate::limits::{Bucket, RetryAfter};
use crate::shopify::hmac::WebhookSecrets;
use crate::store::Store;
use names::FirstNames;
use token::WidgetKeys;

/// What the widget routes share.
pub struct WidgetState {
    /// The app secrets, which sign App Proxy requests.
    pub proxy_secrets: WebhookSecrets,
    pub keys: WidgetKeys,
    /// This instance's nudge desk; `None` where no actix system runs (a bare test server), which then answers 503.
    pub desk: Option<NudgeDesk>,
    pub names: Option<FirstNames>,
    /// Writes a nudge's words from the merchant's templates, sharing this instance's template cache.
    pub renderer: NudgeRenderer,
    /// Where events are stored; `None` without `DATABASE_URL` (outside the demo, which keeps them in memory).
    pub ledger: Option<Ledger>,
    pub limits: WidgetLimits,
    /// Whether `/widget/demo` and its signer are served (never in production: the signer vouches for anyone).
    pub demo: bool,
}

impl WidgetState {
    pub fn new(
        settings: &Settings,
        desk: Option<NudgeDesk>,
        store: Option<Store>,
        ledger: Option<Ledger>,
        templates: TemplateStore,
    ) -> Self {
        if settings.widget_demo && !settings.http_addr.ip().is_loopback() {
            // The demo signer vouches for any customer of any shop: reachable from elsewhere, it is a way around
            // the App Proxy check.
            tracing::warn!(
                addr = %settings.http_addr,
                "WIDGET_DEMO is on and the server listens beyond loopback: /widget/demo/proxy-query signs App Proxy \
                 requests for anyone; never run so in production"
            );
        }
        WidgetState {
            renderer: NudgeRenderer::new(templates, store.clone()).with_ledger(ledger.clone()),
            proxy_secrets: settings.webhook_secrets.clone(),
            keys: WidgetKeys::new(&settings.webhook_secrets),
            desk,
            names: store
                .clone()
                .map(|store| FirstNames::new(store, settings.keys.clone())),
            ledger,
            limits: WidgetLimits::new(
                settings.widget_rate_per_customer,
                settings.widget_sockets_per_customer,
            )
            .with_proxy_rate(settings.widget_proxy_rate_per_ip),
            demo: settings.widget_demo,
        }
    }
}

/// How the nudge desk of any instance is configured.
pub fn desk_config(settings: &Settings) -> NudgeDeskConfig {
    NudgeDeskConfig {
        pending_for: settings.nudge_pending,
        max_pending: settings.nudge_pending_max,
        linger: settings.customer_actor_linger,
        ..Default::default()
    }
}

/// A desk for an instance that serves widgets without consuming (`--role ingress`), fed by the relay. `None` when
/// no actix system runs (the desk's actors need one) and in a deployment without Redis, where only the processor's
/// own instance could have nudges.
pub fn standalone_desk(settings: &Settings) -> redis::RedisResult<Option<NudgeDesk>> {
    if actix_web::rt::System::try_current().is_none() || !settings.redis_enabled {
        return Ok(None);
    }
    let desk = desk_config(settings).build(Arc::new(actors::SystemClock));
    let origin: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    relay::subscribe(settings, desk.clone(), origin)?;
    Ok(Some(desk))
}

/// Per-customer limits of the widget routes, keyed by the verified customer so nobody spends another's budget,
/// and a per-address limit on the App Proxy token route, which has no customer until its signature is checked.
pub struct WidgetLimits {
    /// Keyed by the TCP peer, like the webhook route (forwarded-for headers are not trusted). Requests reach the
    /// route from Shopify's proxy, whose addresses carry many shoppers, so the default budget is generous: it bounds
    /// signature checks from one address, not one shopper.
    proxy: Option<Bucket<IpAddr>>,
    events: Option<Bucket<CustomerKey>>,
    reads: Option<Bucket<CustomerKey>>,
    sockets: Arc<DashMap<CustomerKey, usize>>,
    sockets_per_customer: usize,
}

impl WidgetLimits {
    /// `per_second` requests per customer and route (burst twice that; 0 turns the limit off), and at most
    /// `sockets_per_customer` sockets of one customer on one instance (a shopper with a few tabs open).
    pub fn new(per_second: u32, sockets_per_customer: usize) -> Self {
        WidgetLimits {
            proxy: None,
            events: Bucket::new(per_second),
            reads: Bucket::new(per_second),
            sockets: Arc::new(DashMap::new()),
            sockets_per_customer,
        }
    }

    /// With `per_second` `/proxy/widget-token` requests per peer address (burst twice that; 0: no limit).
    pub fn with_proxy_rate(mut self, per_second: u32) -> Self {
        self.proxy = Bucket::new(per_second);
        self
    }

    pub fn proxy(&self, peer: Option<IpAddr>) -> Result<(), RetryAfter> {
        match (&self.proxy, peer) {
            (Some(bucket), Some(ip)) => bucket.check(&ip, "widget_proxy"),
            _ => Ok(()),
        }
    }

    pub fn event(&self, customer: &CustomerKey) -> Result<(), RetryAfter> {
        match &self.events {
            Some(bucket) => bucket.check(customer, "widget_event"),
            None => Ok(()),
        }
    }

    pub fn read(&self, customer: &CustomerKey) -> Result<(), RetryAfter> {
        match &self.reads {
            Some(bucket) => bucket.check(customer, "widget_read"),
            None => Ok(()),
        }
    }

    /// A place for one more socket of `customer`, held until the permit is dropped.
    pub fn socket(&self, customer: &CustomerKey) -> Option<WidgetSocketPermit> {
        // No entry for a customer who may hold none: it would never be removed.
        if self.sockets_per_customer == 0 {
            metrics::counter!(streams::metric_names::RATE_LIMITED, "door" => "widget_socket")
                .increment(1);
            return None;
        }
        let mut open = self.sockets.entry(customer.clone()).or_insert(0);
        if *open >= self.sockets_per_customer {
            metrics::counter!(streams::metric_names::RATE_LIMITED, "door" => "widget_socket")
                .increment(1);
            return None;
        }
        *open += 1;
        Some(WidgetSocketPermit {
            sockets: self.sockets.clone(),
            customer: customer.clone(),
        })
    }
}

/// One open widget socket; gives its place back when dropped.
pub struct WidgetSocketPermit {
    sockets: Arc<DashMap<CustomerKey, usize>>,
    customer: CustomerKey,
}

impl Drop for WidgetSocketPermit {
    fn drop(&mut self) {
        // Customers with no socket left are removed, so the map holds only the customers connected now.
        self.sockets.remove_if_mut(&self.customer, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streams::MerchantId;

    fn customer(id: u64) -> CustomerKey {
        CustomerKey {
            merchant: MerchantId::parse("a-shop.myshopify.com").unwrap(),
            customer_id: id,
        }
    }

    #[test]
    fn each_customer_has_its_own_budget_and_sockets() {
        let limits = WidgetLimits::new(1, 1);
        assert!(limits.event(&customer(1)).is_ok() && limits.event(&customer(1)).is_ok());
        assert!(
            limits.event(&customer(1)).is_err(),
            "burst is twice the rate"
        );
        assert!(limits.event(&customer(2)).is_ok());
        assert!(limits.read(&customer(1)).is_ok(), "reads are counted apart");
        let first = limits.socket(&customer(1)).unwrap();
        assert!(limits.socket(&customer(1)).is_none());
        assert!(limits.socket(&customer(2)).is_some());
        drop(first);
        assert!(limits.socket(&customer(1)).is_some());
    }

    #[test]
    fn the_proxy_route_is_limited_per_address() {
        let limits = WidgetLimits::new(1, 1).with_proxy_rate(1);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(limits.proxy(Some(a)).is_ok() && limits.proxy(Some(a)).is_ok());
        assert!(limits.proxy(Some(a)).is_err(), "burst is twice the rate");
        assert!(
            limits.proxy(Some(b)).is_ok(),
            "each address has its own budget"
        );
        let off = WidgetLimits::new(1, 1).with_proxy_rate(0);
        assert!((0..10).all(|_| off.proxy(Some(a)).is_ok()));
    }
}
