//! The shopper widget's script and style (compiled into the binary, like the dashboard's), and `/widget/demo`: a
//! storefront-like page with the widget on it, for the demo and the browser test.
//!
//! A real storefront gets its widget token through Shopify's App Proxy, which signs the request. The demo has no
//! Shopify in front of it, so with `WIDGET_DEMO=true` (the demo command sets it) the server signs an App Proxy query
//! for the page's demo customer itself: `GET /widget/demo/proxy-query?shop=&customer=` answers the URL of
//! `/proxy/widget-token` with a fresh, correctly signed query, and the widget then calls that URL, through the real
//! check, as it would call the App Proxy. The signer vouches for any customer, which is why it is off unless
//! `WIDGET_DEMO` is set (404 then, as is the page); the proxy check itself is the same in both modes.

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use streams::MerchantId;

use super::api::now_unix;
use crate::widget::{proxy, WidgetState};

pub const SCRIPT: &str = include_str!("../../web/widget.js");
pub const STYLE: &str = include_str!("../../web/widget.css");
const DEMO_PAGE: &str = include_str!("../../web/widget-demo.html");
const DEMO_STYLE: &str = include_str!("../../web/widget-demo.css");

/// The App Proxy path prefix the demo signs, as a shop would configure it (`/apps/loyalnest`).
const DEMO_PATH_PREFIX: &str = "/apps/loyalnest";

fn no_store() -> CacheControl {
    CacheControl(vec![CacheDirective::NoStore])
}

pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(no_store())
        .body(SCRIPT)
}

pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(no_store())
        .body(STYLE)
}

pub async fn demo_style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(no_store())
        .body(DEMO_STYLE)
}

/// The demo page's query: which shop and which customer the page plays.
#[derive(Debug, Deserialize)]
pub struct DemoQuery {
    pub shop: Option<String>,
    pub customer: Option<String>,
}

/// A demo shop and customer, parsed; the defaults are the demo command's first shop and a customer it creates.
fn demo_customer(query: &DemoQuery) -> Result<(MerchantId, u64), String> {
    let shop = query.shop.as_deref().unwrap_or("demo-1.myshopify.com");
    let shop = MerchantId::parse(shop).map_err(|e| e.to_string())?;
    let customer = query.customer.as_deref().unwrap_or("1");
    let customer = customer
        .parse::<u64>()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| "customer must be a positive number".to_owned())?;
    Ok((shop, customer))
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "the widget demo is off (WIDGET_DEMO)" }))
}

/// `GET /widget/demo?shop=&customer=`: a storefront page with the widget, playing the given customer.
pub async fn demo(query: web::Query<DemoQuery>, state: web::Data<WidgetState>) -> HttpResponse {
    if !state.demo {
        return not_found();
    }
    let (shop, customer) = match demo_customer(&query) {
        Ok(parsed) => parsed,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
    };
    // Both values are parsed (a shop domain, a number), so they are safe inside HTML attributes and text.
    let page = DEMO_PAGE
        .replace("{{shop}}", shop.as_str())
        .replace("{{customer}}", &customer.to_string());
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(no_store())
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .body(page)
}

/// `GET /widget/demo/proxy-query?shop=&customer=`: the `/proxy/widget-token` URL the App Proxy would forward for
/// this customer now, signed with the app secret.
pub async fn sign(query: web::Query<DemoQuery>, state: web::Data<WidgetState>) -> HttpResponse {
    if !state.demo {
        return not_found();
    }
    let (shop, customer) = match demo_customer(&query) {
        Ok(parsed) => parsed,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
    };
    let (customer, timestamp) = (customer.to_string(), now_unix().to_string());
    let signed = proxy::signed_query(
        &[
            ("shop", shop.as_str()),
            ("logged_in_customer_id", &customer),
            ("path_prefix", DEMO_PATH_PREFIX),
            ("timestamp", &timestamp),
        ],
        state.proxy_secrets.current(),
    );
    HttpResponse::Ok()
        .insert_header(no_store())
        .json(json!({ "url": format!("/proxy/widget-token?{signed}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The theme app extension ships the same script and style the binary serves; a copy that drifted would
    /// behave differently on real storefronts than in the demo and the browser test.
    #[test]
    fn the_theme_extension_carries_the_served_widget() {
        let extension = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/extensions/loyalnest-widget/assets"
        );
        let script = std::fs::read_to_string(format!("{extension}/widget.js")).unwrap();
        let style = std::fs::read_to_string(format!("{extension}/widget.css")).unwrap();
        assert!(
            script == SCRIPT,
            "extensions/loyalnest-widget/assets/widget.js differs from web/widget.js"
        );
        assert!(
            style == STYLE,
            "extensions/loyalnest-widget/assets/widget.css differs from web/widget.css"
        );
    }

    #[test]
    fn demo_customers_are_parsed() {
        let q = |shop: Option<&str>, customer: Option<&str>| DemoQuery {
            shop: shop.map(str::to_owned),
            customer: customer.map(str::to_owned),
        };
        assert_eq!(
            demo_customer(&q(None, None)).unwrap().0.as_str(),
            "demo-1.myshopify.com"
        );
        assert_eq!(demo_customer(&q(None, Some("42"))).unwrap().1, 42);
        assert!(demo_customer(&q(Some("<script>"), None)).is_err());
        assert!(demo_customer(&q(None, Some("0"))).is_err());
        assert!(demo_customer(&q(None, Some("1\"onload"))).is_err());
    }
}
