//! `POST /api/v1/rfm/preview`'s engine: what a proposed configuration would do to a merchant's customers, computed
//! on the live state by whichever instance owns the merchant's partition, from any instance.
//!
//! The answer is cached in Redis under `rfm:preview:{merchant}:{config hash}` for an hour (DESIGN.md §7), the hash
//! naming the proposal together with the configuration saved now (its "today" side), so a save makes the next
//! preview of the same proposal fresh. That key is also how the owner answers another instance: the asking instance publishes the proposal on
//! [`REQUESTS`], every processor's responder (`answer_forever`) computes it if it holds the merchant and sets the
//! key, and the asker reads the key until it appears or [`OWNER_WAIT`] passes. An instance that holds the merchant
//! computes it itself. Without Redis or an answer in time, the preview comes from the customer rows in Postgres
//! (`database`), which the owner keeps current; that one is not cached, so the next request asks the owner again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::preview::{preview, Preview};
use functions::{RfmConfig, Timestamp};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use streams::MerchantId;

use crate::directory::{inspect_all, Registry};
use crate::read_model::Source;
use crate::redis_link::{RedisLink, RedisTarget};
use crate::store::{Store, StoreError};

mod database;

/// Where proposals are published for the owners.
pub const REQUESTS: &str = "rfm:preview:requests";
/// How long a preview stays cached.
pub const TTL_SECONDS: u64 = 3_600;
/// How long an instance that does not hold the merchant waits for the owner's answer.
pub const OWNER_WAIT: Duration = Duration::from_secs(3);

/// A preview and where it was computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(flatten)]
    pub preview: Preview,
    pub source: Source,
    /// Unix seconds.
    pub computed_at: i64,
    /// True when the scores were computed without what the rows lack (per-order ages for `recency_decay`).
    pub approximate: bool,
}

/// The proposal as published to the owners, with the key to answer under.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    merchant: MerchantId,
    config: RfmConfig,
    key: String,
}

/// The hex digest naming a configuration: its entity tag without the quotes.
pub fn config_hash(config: &RfmConfig) -> String {
    crate::merchant_config::etag(config)
        .trim_matches('"')
        .to_owned()
}

/// `rfm:preview:{<merchant>}:<hash>` (the shop as the hash tag), the hash of the saved configuration and the
/// proposal together.
pub fn cache_key(merchant: &MerchantId, saved: &RfmConfig, proposed: &RfmConfig) -> String {
    use sha2::{Digest, Sha256};
    let pair = format!("{}:{}", config_hash(saved), config_hash(proposed));
    let digest = Sha256::digest(pair.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "rfm:preview:{}:{hex}",
        crate::redis_link::tag(merchant.as_str())
    )
}

pub struct PreviewService {
    pub registry: Option<Registry>,
    pub redis: Option<RedisLink>,
    pub store: Option<Store>,
}

impl PreviewService {
    /// The preview of `config` for `merchant`, and whether it came from the cache.
    pub async fn preview(
        &self,
        merchant: &MerchantId,
        config: &RfmConfig,
    ) -> Result<(Answer, bool), StoreError> {
        let saved = match &self.store {
            Some(store) => store.load_config(merchant).await?.unwrap_or_default(),
            None => RfmConfig::default(),
        };
        let key = cache_key(merchant, &saved, config);
        let cached = self.cached(&key).await;
        streams::metric_names::cache_lookup("preview", cached.is_some());
        if let Some(hit) = cached {
            return Ok((hit, true));
        }
        if let Some(registry) = &self.registry {
            if let Some(answer) = compute_live(registry, merchant, config).await {
                self.remember(&key, &answer).await;
                return Ok((answer, false));
            }
        }
        if let Some(answer) = self.ask_owner(merchant, config, &key).await {
            return Ok((answer, false));
        }
        let Some(store) = &self.store else {
            let empty = Preview::empty(&RfmConfig::default(), config);
            return Ok((answer_of(empty, Source::Live, false), false));
        };
        Ok((database::preview(store, merchant, config).await?, false))
    }

    async fn cached(&self, key: &str) -> Option<Answer> {
        let redis = self.redis.as_ref()?;
        let raw: Option<String> = redis.query(redis::cmd("GET").arg(key)).await.ok()?;
        serde_json::from_str(&raw?).ok()
    }

    async fn remember(&self, key: &str, answer: &Answer) {
        if let Some(redis) = &self.redis {
            remember(redis, key, answer).await;
        }
    }

    /// Publishes the proposal and waits for an owner to cache its answer; `None` when nobody answered in time.
    async fn ask_owner(
        &self,
        merchant: &MerchantId,
        config: &RfmConfig,
        key: &str,
    ) -> Option<Answer> {
        let redis = self.redis.as_ref()?;
        let request = serde_json::to_string(&Request {
            merchant: merchant.clone(),
            config: config.clone(),
            key: key.to_owned(),
        })
        .ok()?;
        let listeners: i64 = redis
            .query(redis::cmd("PUBLISH").arg(REQUESTS).arg(request))
            .await
            .ok()?;
        // A cluster counts only the subscribers of the node that took the PUBLISH, so its zero proves nothing.
        if listeners == 0 && !redis.target().is_cluster() {
            return None;
        }
        let deadline = Instant::now() + OWNER_WAIT;
        // The owner's answer arrives as the cache key: polled, since one merchant's previews are rare and a
        // subscription per request would cost a connection each.
        while Instant::now() < deadline {
            if let Some(answer) = self.cached(key).await {
                return Some(answer);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(merchant = %merchant, "no owner answered a preview; computing it from Postgres");
        None
    }
}

/// The instance's service; with a partition registry and Redis, also starts answering other instances.
pub fn service(
    settings: &crate::configuration::Settings,
    registry: Option<Registry>,
    store: Option<Store>,
) -> redis::RedisResult<PreviewService> {
    let redis = settings
        .redis_enabled
        .then(|| RedisLink::new(&settings.redis_url, settings.redis_timeout))
        .transpose()?;
    if let (Some(link), Some(registry)) = (&redis, &registry) {
        let client = link.target().clone();
        tokio::spawn(answer_forever(client, link.clone(), registry.clone()));
    }
    Ok(PreviewService {
        registry,
        redis,
        store,
    })
}

fn answer_of(preview: Preview, source: Source, approximate: bool) -> Answer {
    Answer {
        preview,
        source,
        computed_at: chrono::Utc::now().timestamp(),
        approximate,
    }
}

async fn remember(redis: &RedisLink, key: &str, answer: &Answer) {
    let Ok(json) = serde_json::to_string(answer) else {
        return;
    };
    let set = redis::cmd("SET")
        .arg(key)
        .arg(json)
        .arg("EX")
        .arg(TTL_SECONDS)
        .to_owned();
    if let Err(error) = redis.query::<()>(&set).await {
        tracing::warn!(%error, key, "preview not cached");
    }
}

/// Computes the preview inside the partition actor holding `merchant`; `None` if this instance holds none.
async fn compute_live(
    registry: &Registry,
    merchant: &MerchantId,
    config: &RfmConfig,
) -> Option<Answer> {
    let (m, config) = (merchant.clone(), Arc::new(config.clone()));
    let now = Timestamp::from_unix(chrono::Utc::now().timestamp());
    let found = inspect_all(registry, move |core| {
        core.merchant(&m).map(|state| preview(state, &config, now))
    })
    .await;
    let preview = found.into_iter().flatten().next()?;
    Some(answer_of(preview, Source::Live, false))
}

/// Answers other instances' proposals for the merchants this instance holds, until the process ends.
pub async fn answer_forever(client: RedisTarget, link: RedisLink, registry: Registry) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Err(e) = answer(&client, &link, &registry).await {
            tracing::warn!(error = %e, retry_in = ?backoff, "preview subscription failed");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn answer(
    client: &RedisTarget,
    link: &RedisLink,
    registry: &Registry,
) -> redis::RedisResult<()> {
    let mut messages = client.messages(REQUESTS).await?;
    while let Some(message) = messages.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        let Ok(request) = serde_json::from_str::<Request>(&payload) else {
            tracing::debug!("ignoring a malformed preview request");
            continue;
        };
        let prefix = format!(
            "rfm:preview:{}:",
            crate::redis_link::tag(request.merchant.as_str())
        );
        if request.config.validate().is_err() || !request.key.starts_with(&prefix) {
            continue;
        }
        let (link, registry) = (link.clone(), registry.clone());
        // Off the subscription, so one large merchant's preview does not hold up the others'.
        tokio::spawn(async move {
            if let Some(answer) = compute_live(&registry, &request.merchant, &request.config).await
            {
                remember(&link, &request.key, &answer).await;
            }
        });
    }
    Ok(())
}
