//! `GET /dashboard`: the merchant dashboard page, its script and style (ours, compiled into the binary), and
//! Chart.js, served from the npm install in `web/node_modules` (never a CDN).
//!
//! Chart.js is not compiled in: it is not our code, so it is installed from npm (`npm ci --prefix web`) and read
//! from disk. Without it the page still works and shows the same numbers in its table; the demo says so.

use std::path::PathBuf;

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{web, HttpResponse};

const PAGE: &str = include_str!("../../web/dashboard.html");
const SCRIPT: &str = include_str!("../../web/dashboard.js");
const STYLE: &str = include_str!("../../web/dashboard.css");
const RESULTS_SCRIPT: &str = include_str!("../../web/abtest.js");

/// Where `chart.js/dist/chart.umd.js` is looked for.
#[derive(Debug, Clone)]
pub struct Assets {
    pub node_modules: PathBuf,
}

impl Default for Assets {
    fn default() -> Self {
        Assets {
            node_modules: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web/node_modules")),
        }
    }
}

impl Assets {
    pub fn chart_js(&self) -> PathBuf {
        self.node_modules.join("chart.js/dist/chart.umd.js")
    }

    pub fn has_chart_js(&self) -> bool {
        self.chart_js().is_file()
    }
}

fn no_store() -> CacheControl {
    CacheControl(vec![CacheDirective::NoStore])
}

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(no_store())
        // The page loads only our own script and style and talks only to its own origin.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors https://admin.shopify.com https://*.myshopify.com",
        ))
        .body(PAGE)
}

pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(no_store())
        .body(SCRIPT)
}

/// The nudge results panel (`web/abtest.js`).
pub async fn results_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(no_store())
        .body(RESULTS_SCRIPT)
}

pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(no_store())
        .body(STYLE)
}

pub async fn chart_js(assets: web::Data<Assets>) -> HttpResponse {
    match tokio::fs::read(assets.chart_js()).await {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("text/javascript; charset=utf-8")
            .insert_header(CacheControl(vec![CacheDirective::MaxAge(3600)]))
            .body(bytes),
        Err(_) => HttpResponse::NotFound()
            .content_type("text/javascript; charset=utf-8")
            .body("// Chart.js is not installed: run `npm ci --prefix web`.\n"),
    }
}
