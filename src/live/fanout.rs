//! Getting frames from the processor that owns a merchant to every socket watching it, on any instance.
//!
//! Each process keeps a [`Channels`]: one `watch` slot per merchant holding the latest frame. A socket task waits
//! on its merchant's slot and always sends the newest frame, so a slow client skips frames instead of queueing
//! them and never holds anyone else back. With Redis, the processor publishes each frame (and keeps the latest in
//! a key, for sockets that connect later) and every instance's subscriber fills its own slots; without Redis, or
//! while Redis is unreachable, frames go straight into this process's slots.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use streams::MerchantId;
use tokio::sync::watch;

use super::Frame;
use crate::redis_link::RedisLink;

/// The Redis pub/sub channel frames travel on.
pub const CHANNEL: &str = "rfm:dashboard";
/// How long the latest frame of a merchant stays readable for sockets that connect later.
const LAST_FRAME_TTL_SECS: u64 = 86_400;

fn last_frame_key(merchant: &str) -> String {
    format!("rfm:dashboard:last:{merchant}")
}

/// A rendered frame, shared by every socket that sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFrame {
    pub seq: u64,
    pub json: Arc<str>,
}

impl LiveFrame {
    pub fn render(frame: &Frame) -> LiveFrame {
        LiveFrame {
            seq: frame.seq,
            // A frame is strings and numbers only; serialising it cannot fail.
            json: serde_json::to_string(frame).unwrap_or_default().into(),
        }
    }

    fn parse(json: &str) -> Option<LiveFrame> {
        let seq = serde_json::from_str::<Frame>(json).ok()?.seq;
        Some(LiveFrame {
            seq,
            json: json.into(),
        })
    }
}

pub type Slot = watch::Receiver<Option<LiveFrame>>;

/// This process's latest frame per merchant.
#[derive(Default)]
pub struct Channels {
    slots: DashMap<MerchantId, watch::Sender<Option<LiveFrame>>>,
}

impl Channels {
    pub fn deliver(&self, merchant: &MerchantId, frame: LiveFrame) {
        match self.slots.get(merchant) {
            Some(slot) => {
                slot.send_replace(Some(frame));
            }
            None => {
                self.slots
                    .insert(merchant.clone(), watch::Sender::new(Some(frame)));
            }
        }
    }

    /// Applies an erasure to this process's slots: a cleared slot holds no frame until the next one; a gone
    /// shop's slot is dropped, which ends its sockets.
    pub fn erase(&self, erasure: &Erasure) {
        match erasure {
            Erasure::Clear(merchant) => {
                if let Some(slot) = self.slots.get(merchant) {
                    slot.send_replace(None);
                }
            }
            Erasure::Gone(merchant) => {
                self.slots.remove(merchant);
            }
        }
    }

    pub fn subscribe(&self, merchant: &MerchantId) -> Slot {
        self.slots
            .entry(merchant.clone())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe()
    }
}

/// A GDPR erasure of what dashboards hold: a redacted customer may be named in a shop's last frame (`Clear`), a
/// redacted shop has nothing left to show (`Gone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    Clear(MerchantId),
    Gone(MerchantId),
}

impl Erasure {
    fn merchant(&self) -> &MerchantId {
        match self {
            Erasure::Clear(m) | Erasure::Gone(m) => m,
        }
    }

    /// The pub/sub message: the merchant, then an empty line for `Clear` or `GONE` for `Gone` (a frame is JSON,
    /// so neither can be mistaken for one).
    fn message(&self) -> String {
        match self {
            Erasure::Clear(m) => format!("{m}\n"),
            Erasure::Gone(m) => format!("{m}\n{GONE}"),
        }
    }
}

const GONE: &str = "GONE";

/// Where the processor's frames go.
#[derive(Clone)]
pub struct FrameSink {
    local: Arc<Channels>,
    redis: Option<RedisFanout>,
}

#[derive(Clone)]
struct RedisFanout {
    link: RedisLink,
}

impl FrameSink {
    /// Frames straight into this process's sockets.
    pub fn local(channels: Arc<Channels>) -> FrameSink {
        FrameSink {
            local: channels,
            redis: None,
        }
    }

    /// Frames through Redis to every instance, falling back to `channels` when Redis cannot be reached.
    pub fn redis(
        url: &str,
        channels: Arc<Channels>,
        timeout: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(FrameSink {
            local: channels,
            redis: Some(RedisFanout {
                link: RedisLink::new(url, timeout)?,
            }),
        })
    }

    /// Deletes the erased shops' last frames from Redis and tells every instance to apply the erasures to its
    /// slots; without Redis, applies them here. An error leaves the erasures to be tried again.
    pub async fn erase(&self, erasures: &[Erasure]) -> Result<(), String> {
        let Some(redis) = &self.redis else {
            erasures.iter().for_each(|e| self.local.erase(e));
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for erasure in erasures {
            pipe.del(last_frame_key(erasure.merchant().as_str()))
                .ignore();
            pipe.publish(CHANNEL, erasure.message()).ignore();
        }
        redis.link.run(&pipe).await
    }

    pub async fn publish(&self, frames: Vec<(MerchantId, LiveFrame)>) {
        if let Some(redis) = &self.redis {
            match redis.publish(&frames).await {
                Ok(()) => return,
                Err(e) => {
                    metrics::counter!("dashboard_fanout_errors_total").increment(1);
                    tracing::warn!(error = %e, frames = frames.len(), "dashboard fan-out through Redis failed; delivering locally");
                }
            }
        }
        for (merchant, frame) in frames {
            self.local.deliver(&merchant, frame);
        }
    }
}

impl RedisFanout {
    async fn publish(&self, frames: &[(MerchantId, LiveFrame)]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for (merchant, frame) in frames {
            let message = format!("{merchant}\n{}", frame.json);
            pipe.publish(CHANNEL, message).ignore();
            pipe.set_ex(
                last_frame_key(merchant.as_str()),
                &*frame.json,
                LAST_FRAME_TTL_SECS,
            )
            .ignore();
        }
        self.link.run(&pipe).await
    }
}

/// The latest frame Redis holds for `merchant`, for a socket that connects before this instance saw one.
pub async fn last_frame(
    client: &redis::Client,
    merchant: &MerchantId,
    timeout: Duration,
) -> Option<LiveFrame> {
    let read = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let json: Option<String> = redis::cmd("GET")
            .arg(last_frame_key(merchant.as_str()))
            .query_async(&mut conn)
            .await
            .ok()?;
        LiveFrame::parse(&json?)
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Fills `channels` from the Redis channel until the process ends, reconnecting with backoff.
pub async fn subscribe_forever(client: redis::Client, channels: Arc<Channels>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match relay(&client, &channels).await {
            Ok(()) => tracing::warn!("dashboard subscription ended; resubscribing"),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "dashboard subscription failed")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn relay(client: &redis::Client, channels: &Channels) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    tracing::info!(channel = CHANNEL, "dashboard fan-out subscribed");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = match message.get_payload() {
            Ok(p) => p,
            Err(_) => continue,
        };
        let Some((merchant, json)) = payload.split_once('\n') else {
            continue;
        };
        let erasure = match (MerchantId::parse(merchant), json) {
            (Ok(m), "") => Some(Erasure::Clear(m)),
            (Ok(m), GONE) => Some(Erasure::Gone(m)),
            _ => None,
        };
        if let Some(erasure) = erasure {
            channels.erase(&erasure);
            continue;
        }
        let (Ok(merchant), Some(frame)) = (MerchantId::parse(merchant), LiveFrame::parse(json))
        else {
            tracing::debug!("ignoring a malformed dashboard message");
            continue;
        };
        channels.deliver(&merchant, frame);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> LiveFrame {
        LiveFrame {
            seq,
            json: format!("{{\"seq\":{seq}}}").into(),
        }
    }

    #[tokio::test]
    async fn a_slow_reader_sees_only_the_latest_frame() {
        let channels = Channels::default();
        let shop = MerchantId::parse("a.myshopify.com").unwrap();
        let mut slot = channels.subscribe(&shop);
        for seq in 1..=5 {
            channels.deliver(&shop, frame(seq));
        }
        slot.changed().await.unwrap();
        assert_eq!(slot.borrow_and_update().as_ref().unwrap().seq, 5);
        assert!(!slot.has_changed().unwrap());
    }

    #[tokio::test]
    async fn without_redis_frames_are_delivered_locally() {
        let channels = Arc::new(Channels::default());
        let shop = MerchantId::parse("b.myshopify.com").unwrap();
        let slot = channels.subscribe(&shop);
        FrameSink::local(channels.clone())
            .publish(vec![(shop.clone(), frame(1))])
            .await;
        assert_eq!(slot.borrow().as_ref().unwrap().seq, 1);
    }
}
