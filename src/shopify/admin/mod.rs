//! The Shopify Admin GraphQL client: one POST per call to `{SHOPIFY_ADMIN_URL}/admin/api/{version}/graphql.json`
//! with the shop's offline token, answering the reply's `data`, `errors` and cost extension, and sorting failures
//! into what a caller does about them: retry later (transport, 5xx, `THROTTLED`), fix the token (401/403), or give
//! up on the input (any other 4xx, undecodable bodies).
//!
//! Pacing by the cost-based throttle is `throttle`'s business; the metafield operations are in `metafields`.

pub mod metafields;
pub mod paced;
pub mod throttle;

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Where the Admin API is and which version of it we speak.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `SHOPIFY_ADMIN_URL`; `{shop}` in it is replaced by the shop's domain.
    pub base_url: String,
    /// `SHOPIFY_API_VERSION`, pinned so a Shopify release never changes what we send.
    pub api_version: String,
}

impl AdminSettings {
    /// The base address for `shop`, without a trailing slash.
    pub fn base_for(&self, shop: &str) -> String {
        self.base_url
            .replace("{shop}", shop)
            .trim_end_matches('/')
            .to_owned()
    }
}

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    settings: AdminSettings,
}

/// A GraphQL answer that came back as one (HTTP 200 with a JSON body, not throttled).
#[derive(Debug, Clone)]
pub struct GraphqlReply {
    pub data: Value,
    pub errors: Vec<Value>,
    pub cost: Option<QueryCost>,
}

/// `extensions.cost` of a reply: what the call was estimated and charged, and the bucket after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryCost {
    pub requested: f64,
    pub actual: Option<f64>,
    pub maximum_available: f64,
    pub currently_available: f64,
    pub restore_rate: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the Admin API could not be reached: {0}")]
    Transport(String),
    #[error("the Admin API answered HTTP {status}")]
    Status { status: u16, body: String },
    #[error("throttled by the Admin API")]
    Throttled { cost: Option<QueryCost> },
    #[error("the Admin API refused the access token")]
    Unauthorized,
    #[error("the Admin API's answer could not be read: {0}")]
    Decode(String),
}

impl AdminError {
    /// Worth another try later: the same call may succeed once Shopify recovers or the bucket refills.
    pub fn is_transient(&self) -> bool {
        match self {
            AdminError::Transport(_) | AdminError::Throttled { .. } => true,
            AdminError::Status { status, .. } => *status >= 500 || *status == 429,
            AdminError::Unauthorized | AdminError::Decode(_) => false,
        }
    }
}

#[derive(Deserialize)]
struct RawReply {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    errors: Vec<Value>,
    #[serde(default)]
    extensions: Option<RawExtensions>,
}

#[derive(Deserialize)]
struct RawExtensions {
    cost: Option<RawCost>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCost {
    requested_query_cost: f64,
    actual_query_cost: Option<f64>,
    throttle_status: RawThrottle,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawThrottle {
    maximum_available: f64,
    currently_available: f64,
    restore_rate: f64,
}

/// Bodies quoted in errors are cut here: enough to read Shopify's message, never a whole page.
const QUOTED_BODY: usize = 512;

impl AdminClient {
    pub fn new(settings: AdminSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        AdminClient { http, settings }
    }

    pub fn settings(&self) -> &AdminSettings {
        &self.settings
    }

    /// The HTTP client, shared with the token exchange.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POST {base}/admin/api/{version}/graphql.json with X-Shopify-Access-Token.
    pub async fn graphql(
        &self,
        shop: &str,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<GraphqlReply, AdminError> {
        let url = format!(
            "{}/admin/api/{}/graphql.json",
            self.settings.base_for(shop),
            self.settings.api_version
        );
        let response = self
            .http
            .post(url)
            .header("X-Shopify-Access-Token", token)
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| AdminError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| AdminError::Transport(e.to_string()))?;
        classify(status, &body)
    }
}

/// Sorts an HTTP answer into a reply or an [`AdminError`].
fn classify(status: u16, body: &[u8]) -> Result<GraphqlReply, AdminError> {
    match status {
        401 | 403 => return Err(AdminError::Unauthorized),
        // Shopify documents THROTTLED inside a 200; a 429 is read the same way, in case one is sent.
        429 => {
            let cost = serde_json::from_slice::<RawReply>(body)
                .ok()
                .and_then(|r| r.extensions.and_then(|e| e.cost).map(QueryCost::from));
            return Err(AdminError::Throttled { cost });
        }
        200..=299 => {}
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]).into_owned();
            return Err(AdminError::Status { status, body: text });
        }
    }
    let raw: RawReply =
        serde_json::from_slice(body).map_err(|e| AdminError::Decode(e.to_string()))?;
    let cost = raw.extensions.and_then(|e| e.cost).map(QueryCost::from);
    if raw.errors.iter().any(is_throttled) {
        return Err(AdminError::Throttled { cost });
    }
    Ok(GraphqlReply {
        data: raw.data,
        errors: raw.errors,
        cost,
    })
}

fn is_throttled(error: &Value) -> bool {
    error.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED")
}

impl From<RawCost> for QueryCost {
    fn from(raw: RawCost) -> Self {
        QueryCost {
            requested: raw.requested_query_cost,
            actual: raw.actual_query_cost,
            maximum_available: raw.throttle_status.maximum_available,
            currently_available: raw.throttle_status.currently_available,
            restore_rate: raw.throttle_status.restore_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COST: &str = r#"{"cost":{"requestedQueryCost":10,"actualQueryCost":null,
        "throttleStatus":{"maximumAvailable":1000.0,"currentlyAvailable":4.0,"restoreRate":100.0}}}"#;

    #[test]
    fn a_throttled_reply_is_an_error_with_the_bucket() {
        let body = format!(
            r#"{{"errors":[{{"message":"Throttled","extensions":{{"code":"THROTTLED"}}}}],"extensions":{COST}}}"#
        );
        match classify(200, body.as_bytes()) {
            Err(AdminError::Throttled { cost: Some(cost) }) => {
                assert_eq!(cost.currently_available, 4.0);
                assert_eq!(cost.actual, None);
            }
            other => panic!("not throttled: {other:?}"),
        }
    }

    #[test]
    fn statuses_sort_into_transient_and_permanent() {
        assert!(matches!(classify(401, b""), Err(AdminError::Unauthorized)));
        let e = classify(502, b"bad gateway").unwrap_err();
        assert!(e.is_transient());
        let e = classify(422, b"{}").unwrap_err();
        assert!(!e.is_transient());
        assert!(classify(200, b"<html>")
            .unwrap_err()
            .to_string()
            .contains("read"));
    }

    #[test]
    fn a_reply_keeps_data_errors_and_cost() {
        let body =
            format!(r#"{{"data":{{"x":1}},"errors":[{{"message":"m"}}],"extensions":{COST}}}"#);
        let reply = classify(200, body.as_bytes()).unwrap();
        assert_eq!(reply.data["x"], 1);
        assert_eq!(reply.errors.len(), 1);
        assert_eq!(reply.cost.unwrap().requested, 10.0);
        let base = AdminSettings {
            base_url: "https://{shop}/".into(),
            api_version: "2025-10".into(),
        };
        assert_eq!(base.base_for("a.myshopify.com"), "https://a.myshopify.com");
    }
}
