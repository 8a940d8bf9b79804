//! Getting a fired nudge to the shopper's widget on whichever instance it is connected to.
//!
//! The instance that owns a customer's partition fires the nudge and hands it to its own desk at once. With Redis,
//! it also publishes the hand-off (nudges, then erasures, as one message) on a channel named after the deployment's
//! `rfm.task` topic, and every other instance's subscriber hands the same nudges and erasures to its desk, so a
//! widget on any instance gets the current nudge and every newer one, and an erasure ends watches everywhere. The
//! desk keeps the newest version per customer, so a nudge heard twice is held once. Messages name customers by id
//! only: no personal data goes through Redis.
//!
//! Publishing is off the hand-off's path: messages go through a bounded queue to one task that publishes them in
//! order. When Redis is slow the queue fills; then nudges are dropped for the other instances (counted), while an
//! erasure waits for room, and is retried for a while if publishing fails, because an erasure must not be lost
//! quietly. An instance that is not subscribed when a message is published (starting, or reconnecting) misses it:
//! its widgets see that customer's next nudge, and an erased customer's nudge it holds expires with the pending
//! window.

use std::sync::Arc;
use std::time::Duration;

use actors::customer::{CustomerKey, PendingNudge};
use actors::nudges::NudgeDesk;
use functions::{NudgeKind, Timestamp};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use streams::MerchantId;
use tokio::sync::mpsc;

use crate::configuration::Settings;
use crate::redis_link::{RedisLink, RedisTarget};

/// Messages waiting to be published before nudges are dropped.
const QUEUE: usize = 4096;
/// Attempts at publishing a message that carries an erasure.
const ERASURE_ATTEMPTS: u32 = 8;

/// The pub/sub channel of a deployment: nudges are `rfm.task` records, so the channel is named after that topic.
pub fn channel(settings: &Settings) -> String {
    format!("rfm:nudges:{}", settings.topics.rfm_task)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct WireNudge {
    merchant: MerchantId,
    customer_id: u64,
    version: u32,
    segment: String,
    kind: String,
    /// Absent in messages of instances from before experiments.
    #[serde(default)]
    experiment_id: Option<String>,
    variant: String,
    locale: Option<String>,
    trace_id: String,
    /// Absent in messages of instances from before `{points}` rendered.
    #[serde(default)]
    points: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct WireErasure {
    merchant: MerchantId,
    customer_id: Option<u64>,
}

/// One hand-off, as published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Message {
    /// The publishing instance, whose own subscriber skips the message (its desk already has it).
    origin: String,
    nudges: Vec<WireNudge>,
    forget: Vec<WireErasure>,
}

impl WireNudge {
    fn of(nudge: &PendingNudge) -> WireNudge {
        WireNudge {
            merchant: nudge.key.merchant.clone(),
            customer_id: nudge.key.customer_id,
            version: nudge.version,
            segment: nudge.segment.clone(),
            kind: nudge.kind.as_str().to_owned(),
            experiment_id: nudge.experiment_id.as_deref().map(str::to_owned),
            variant: nudge.variant.to_string(),
            locale: nudge.locale.clone(),
            trace_id: nudge.trace_id.clone(),
            points: nudge.points,
        }
    }

    fn into_pending(self) -> Option<PendingNudge> {
        Some(PendingNudge {
            key: CustomerKey {
                merchant: self.merchant,
                customer_id: self.customer_id,
            },
            version: self.version,
            segment: self.segment,
            kind: NudgeKind::parse(&self.kind)?,
            experiment_id: match &self.experiment_id {
                Some(id) => Some(name(id)?),
                None => None,
            },
            variant: name(&self.variant)?,
            locale: self.locale,
            trace_id: self.trace_id,
            // Stamped by the desk that takes it.
            fired_at: Timestamp(0),
            points: self.points,
        })
    }
}

/// The longest variant or experiment id taken from another instance; longer ones are not ours, and dropped.
const MAX_NAME: usize = 64;

/// A name heard from another instance, if it is one this engine could have given.
fn name(raw: &str) -> Option<Arc<str>> {
    if raw.is_empty() || raw.len() > MAX_NAME {
        tracing::warn!("a nudge from another instance names a variant or experiment no arm could have; dropped");
        return None;
    }
    Some(Arc::from(raw))
}

/// The publishing side, held by the processor's publisher.
#[derive(Clone)]
pub struct NudgeRelay {
    origin: Arc<str>,
    queue: mpsc::Sender<Queued>,
}

struct Queued {
    json: String,
    erasure: bool,
}

impl NudgeRelay {
    /// Starts publishing to, and subscribing `desk` to, the deployment's channel.
    pub fn start(settings: &Settings, desk: NudgeDesk) -> redis::RedisResult<NudgeRelay> {
        let origin: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let link = RedisLink::new(&settings.redis_url, settings.redis_timeout)?;
        let (queue, pending) = mpsc::channel(QUEUE);
        let channel = channel(settings);
        tokio::spawn(publish_forever(link, channel.clone(), pending));
        subscribe(settings, desk, origin.clone())?;
        Ok(NudgeRelay { origin, queue })
    }

    /// Queues one hand-off for the other instances (after this instance's desk has taken it).
    async fn send(&self, nudges: &[PendingNudge], erased: &[(MerchantId, Option<u64>)]) {
        let message = Message {
            origin: self.origin.to_string(),
            nudges: nudges.iter().map(WireNudge::of).collect(),
            forget: erased
                .iter()
                .map(|(merchant, customer_id)| WireErasure {
                    merchant: merchant.clone(),
                    customer_id: *customer_id,
                })
                .collect(),
        };
        let queued = Queued {
            // Strings and integers only: serialising cannot fail.
            json: serde_json::to_string(&message).unwrap_or_default(),
            erasure: !message.forget.is_empty(),
        };
        if queued.erasure {
            if self.queue.send(queued).await.is_err() {
                tracing::warn!("nudge relay stopped; an erasure did not reach the other instances");
            }
        } else if self.queue.try_send(queued).is_err() {
            metrics::counter!(streams::metric_names::NUDGE_RELAY_DROPPED)
                .increment(nudges.len() as u64);
        }
    }
}

/// Subscribes `desk` to the deployment's channel, for an instance that serves widgets but fires no nudges.
pub fn subscribe(settings: &Settings, desk: NudgeDesk, origin: Arc<str>) -> redis::RedisResult<()> {
    let client = RedisTarget::open(&settings.redis_url)?;
    tokio::spawn(subscribe_forever(client, channel(settings), desk, origin));
    Ok(())
}

/// Hands an outcome's nudges and then its erasures to this instance's desk, then to the other instances.
pub async fn hand_over(
    desk: &NudgeDesk,
    relay: Option<&NudgeRelay>,
    nudges: Vec<PendingNudge>,
    erased: &[(MerchantId, Option<u64>)],
) {
    let relayed = relay.map(|_| nudges.clone());
    desk.offer(nudges).await;
    for (merchant, customer) in erased {
        desk.forget(merchant, *customer).await;
    }
    if let (Some(relay), Some(nudges)) = (relay, relayed) {
        if !nudges.is_empty() || !erased.is_empty() {
            relay.send(&nudges, erased).await;
        }
    }
}

async fn publish_forever(link: RedisLink, channel: String, mut pending: mpsc::Receiver<Queued>) {
    while let Some(queued) = pending.recv().await {
        let attempts = if queued.erasure { ERASURE_ATTEMPTS } else { 1 };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=attempts {
            let mut pipe = redis::pipe();
            pipe.publish(&channel, &queued.json).ignore();
            match link.run(&pipe).await {
                Ok(()) => break,
                Err(e) if attempt == attempts => {
                    streams::metric_names::error("widget", "relay");
                    tracing::warn!(error = %e, erasure = queued.erasure, "nudge relay gave up on a message");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Feeds `desk` from the channel until the process ends, reconnecting with backoff.
async fn subscribe_forever(
    client: RedisTarget,
    channel: String,
    desk: NudgeDesk,
    origin: Arc<str>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match relay(&client, &channel, &desk, &origin).await {
            Ok(()) => tracing::warn!("nudge subscription ended; resubscribing"),
            Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "nudge subscription failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn relay(
    client: &RedisTarget,
    channel: &str,
    desk: &NudgeDesk,
    origin: &str,
) -> redis::RedisResult<()> {
    let mut messages = client.messages(channel).await?;
    tracing::info!(channel, "nudge relay subscribed");
    while let Some(message) = messages.next().await {
        let payload: Vec<u8> = message.get_payload().unwrap_or_default();
        let Ok(message) = serde_json::from_slice::<Message>(&payload) else {
            tracing::debug!("ignoring a malformed nudge relay message");
            continue;
        };
        if message.origin != origin {
            apply(desk, message).await;
        }
    }
    Ok(())
}

async fn apply(desk: &NudgeDesk, message: Message) {
    let nudges: Vec<PendingNudge> = message
        .nudges
        .into_iter()
        .filter_map(WireNudge::into_pending)
        .collect();
    desk.offer(nudges).await;
    for erasure in message.forget {
        desk.forget(&erasure.merchant, erasure.customer_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nudge(variant: &str) -> PendingNudge {
        PendingNudge {
            key: CustomerKey {
                merchant: MerchantId::parse("a-shop.myshopify.com").unwrap(),
                customer_id: 9,
            },
            version: 4,
            segment: "at_risk".into(),
            kind: NudgeKind::AtRisk,
            experiment_id: Some("spring".into()),
            variant: variant.into(),
            locale: Some("ar".into()),
            trace_id: "t-1".into(),
            fired_at: Timestamp(0),
            points: 1_200,
        }
    }

    #[test]
    fn a_nudge_survives_the_wire_without_its_firing_time() {
        let mut sent = nudge("B");
        sent.fired_at = Timestamp(1_000);
        let json = serde_json::to_string(&WireNudge::of(&sent)).unwrap();
        let back: WireNudge = serde_json::from_str(&json).unwrap();
        let received = back.into_pending().unwrap();
        assert_eq!(
            received,
            PendingNudge {
                fired_at: Timestamp(0),
                ..sent
            }
        );
    }

    #[test]
    fn unknown_kinds_and_runaway_variant_names_are_dropped() {
        let mut wire = WireNudge::of(&nudge("A"));
        wire.kind = "discount".into();
        assert_eq!(wire.into_pending(), None);
        let mut long = WireNudge::of(&nudge("A"));
        long.variant = "x".repeat(65);
        assert_eq!(long.into_pending(), None);
        let mut long = WireNudge::of(&nudge("A"));
        long.experiment_id = Some("x".repeat(65));
        assert_eq!(long.into_pending(), None);
        let mut old = serde_json::to_value(WireNudge::of(&nudge("A"))).unwrap();
        old.as_object_mut().unwrap().remove("experiment_id");
        let old: WireNudge = serde_json::from_value(old).unwrap();
        assert_eq!(
            old.into_pending().unwrap().experiment_id,
            None,
            "an older instance's message"
        );
    }
}
