//! The Shopify Admin GraphQL client: one POST per operation, the shop's access token in
//! `X-Shopify-Access-Token`, and the cost extension decoded so callers can pace themselves.
//!
//! (shopify-history's minimal copy of the interface agreed with shopify-sync; the lead keeps shopify-sync's
//! fuller version at merge.)

use std::time::Duration;

use serde_json::Value;

/// Where the Admin API is: `SHOPIFY_ADMIN_URL` (with `{shop}` replaced by the shop domain) and the pinned version.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub base_url: String,
    pub api_version: String,
}

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    settings: AdminSettings,
}

/// A GraphQL answer: `data`, any `errors`, and the query's cost when Shopify reported it.
#[derive(Debug, Clone)]
pub struct GraphqlReply {
    pub data: Value,
    pub errors: Vec<Value>,
    pub cost: Option<QueryCost>,
}

/// `extensions.cost` of a reply, with its `throttleStatus` flattened.
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
    Transport(#[source] reqwest::Error),
    #[error("the Admin API answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the Admin API throttled the request (cost {requested}, {available} available)")]
    Throttled { requested: f64, available: f64 },
    #[error("the Admin API refused the access token")]
    Unauthorized,
    #[error("the Admin API's answer is not GraphQL JSON: {0}")]
    Decode(String),
}

impl AdminClient {
    pub fn new(settings: AdminSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        AdminClient { http, settings }
    }

    /// The shop's Admin API root, e.g. `https://shop.myshopify.com`.
    pub fn base_for(&self, shop: &str) -> String {
        self.settings
            .base_url
            .replace("{shop}", shop)
            .trim_end_matches('/')
            .to_owned()
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
            self.base_for(shop),
            self.settings.api_version
        );
        let response = self
            .http
            .post(url)
            .header("X-Shopify-Access-Token", token)
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(AdminError::Transport)?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(AdminError::Unauthorized);
        }
        let body = response.text().await.map_err(AdminError::Transport)?;
        if status != 200 {
            return Err(AdminError::Status {
                status,
                body: body.chars().take(300).collect(),
            });
        }
        decode(&body)
    }
}

fn decode(body: &str) -> Result<GraphqlReply, AdminError> {
    let mut value: Value =
        serde_json::from_str(body).map_err(|e| AdminError::Decode(e.to_string()))?;
    let cost = value.pointer("/extensions/cost").and_then(|c| {
        let status = c.get("throttleStatus")?;
        Some(QueryCost {
            requested: c.get("requestedQueryCost")?.as_f64()?,
            actual: c.get("actualQueryCost").and_then(Value::as_f64),
            maximum_available: status.get("maximumAvailable")?.as_f64()?,
            currently_available: status.get("currentlyAvailable")?.as_f64()?,
            restore_rate: status.get("restoreRate")?.as_f64()?,
        })
    });
    let errors = match value.get_mut("errors").map(Value::take) {
        Some(Value::Array(errors)) => errors,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    };
    let throttled = errors
        .iter()
        .any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED"));
    if throttled {
        return Err(AdminError::Throttled {
            requested: cost.map_or(0.0, |c| c.requested),
            available: cost.map_or(0.0, |c| c.currently_available),
        });
    }
    Ok(GraphqlReply {
        data: value
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Null),
        errors,
        cost,
    })
}
