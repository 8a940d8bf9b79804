//! Widget tokens, asked for as the storefront asks: through the App Proxy route, with the query signed as Shopify
//! signs proxied requests (every parameter but `signature` as `key=value`, sorted, joined with nothing, HMAC-SHA256
//! in hex under the app secret).

use std::collections::HashMap;

use anyhow::{bail, Context};
use futures_util::{stream, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Options;

/// The App Proxy path prefix the storefront uses.
const PATH_PREFIX: &str = "/apps/loyalnest";

/// The signed query for `customer`, as Shopify would forward it.
pub fn signed_query(
    secret: &str,
    shop: &str,
    customer: u64,
    now_unix: i64,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("logged_in_customer_id".to_owned(), customer.to_string()),
        ("path_prefix".to_owned(), PATH_PREFIX.to_owned()),
        ("shop".to_owned(), shop.to_owned()),
        ("timestamp".to_owned(), now_unix.to_string()),
    ];
    params.sort();
    let message: String = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params.push(("signature".to_owned(), signature));
    params
}

/// One token per customer, fetched with at most `in_flight` requests at once.
pub async fn fetch_tokens(
    http: &reqwest::Client,
    options: &Options,
    customers: &[u64],
) -> anyhow::Result<HashMap<u64, String>> {
    let url = format!("{}/proxy/widget-token", options.base_url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let results: Vec<anyhow::Result<(u64, String)>> = stream::iter(customers.iter().copied())
        .map(|customer| {
            let query = signed_query(&options.secret, &options.shop, customer, now);
            let request = http.get(&url).query(&query);
            async move {
                let response = request.send().await.context("proxy request")?;
                if !response.status().is_success() {
                    bail!(
                        "proxy answered {} for customer {customer}",
                        response.status()
                    );
                }
                let body: serde_json::Value = response.json().await.context("proxy body")?;
                let token = body["token"].as_str().context("no token in the answer")?;
                Ok((customer, token.to_owned()))
            }
        })
        .buffer_unordered(options.in_flight.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
