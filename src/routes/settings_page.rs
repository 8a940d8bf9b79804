//! `GET /dashboard/settings`: the RFM settings page (thresholds, weights, tiers in English, Spanish and French,
//! live preview, save), its scripts and style, compiled into the binary like the dashboard's.
//!
//! Opened inside the Shopify admin (the admin adds `embedded=1` and `host` to the app URL) the page carries App
//! Bridge: the `shopify-api-key` meta and Shopify's script, which the CSP then allows, and the page takes its
//! session token from `shopify.idToken()`. Standalone it is the dashboard's own-origin page with the token in the
//! fragment.

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{web, HttpRequest, HttpResponse};

use super::api::ReadState;

const PAGE: &str = include_str!("../../web/settings.html");
const FORM: &str = include_str!("../../web/settings-form.js");
const SCRIPT: &str = include_str!("../../web/settings.js");
const I18N: &str = include_str!("../../web/settings-i18n.js");
const STYLE: &str = include_str!("../../web/settings.css");

const APP_BRIDGE: &str = "https://cdn.shopify.com/shopifycloud/app-bridge.js";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard/settings", web::get().to(page))
        .route(
            "/dashboard/settings.js",
            web::get().to(|| asset(SCRIPT, "text/javascript")),
        )
        .route(
            "/dashboard/settings-form.js",
            web::get().to(|| asset(FORM, "text/javascript")),
        )
        .route(
            "/dashboard/settings-i18n.js",
            web::get().to(|| asset(I18N, "text/javascript")),
        )
        .route(
            "/dashboard/settings.css",
            web::get().to(|| asset(STYLE, "text/css")),
        );
}

fn no_store() -> CacheControl {
    CacheControl(vec![CacheDirective::NoStore])
}

async fn asset(body: &'static str, kind: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(format!("{kind}; charset=utf-8"))
        .insert_header(no_store())
        .body(body)
}

/// Whether the Shopify admin is loading the page in its iframe.
fn embedded(req: &HttpRequest) -> bool {
    let query = req.query_string();
    query
        .split('&')
        .any(|pair| pair == "embedded=1" || pair.starts_with("host="))
}

/// The API key is ours (configuration), but it is escaped anyway: it lands inside an attribute.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '&' => "&amp;".chars().collect::<Vec<_>>(),
            '"' => "&quot;".chars().collect(),
            '<' => "&lt;".chars().collect(),
            '>' => "&gt;".chars().collect(),
            c => vec![c],
        })
        .collect()
}

pub async fn page(req: HttpRequest, state: web::Data<ReadState>) -> HttpResponse {
    let (body, scripts) = if embedded(&req) {
        let bridge = format!(
            "<meta name=\"shopify-api-key\" content=\"{}\">\n  <script src=\"{APP_BRIDGE}\"></script>",
            escape(&state.verifier.api_key)
        );
        (
            PAGE.replace("<!--APP-BRIDGE-->", &bridge),
            format!("'self' {APP_BRIDGE}"),
        )
    } else {
        (PAGE.replace("<!--APP-BRIDGE-->", ""), "'self'".to_owned())
    };
    let policy = format!(
        "default-src 'self'; script-src {scripts}; connect-src 'self' https://*.shopify.com; img-src 'self' data:; \
         frame-ancestors https://admin.shopify.com https://*.myshopify.com"
    );
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(no_store())
        .insert_header(("Content-Security-Policy", policy))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_escaped() {
        assert_eq!(escape("a\"<b>&"), "a&quot;&lt;b&gt;&amp;");
    }
}
