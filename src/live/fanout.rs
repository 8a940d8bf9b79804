//! Getting frames from the processor that owns a merchant to every socket watching it, on any instance.
//!
//! Each process keeps a [`Channels`]: one `watch` slot per merchant holding the latest frame. A socket task waits
//! on its merchant's slot and always sends the newest frame, so a slow client skips frames instead of queueing
//! them and never holds anyone else back. With Redis, the processor publishes each frame (and keeps the latest in
//! a key, for sockets that connect later) and every instance's subscriber fills its own slots; without Redis, or
//! while Redis is unreachable, frames go straight into this process's slots.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use streams::MerchantId;
use tokio::sync::watch;

use super::bounds::{evictions, LiveBound, Use};
use super::Frame;
use crate::redis_link::{tag, RedisLink, RedisTarget};

/// The Redis pub/sub channel frames travel on.
pub const CHANNEL: &str = "rfm:dashboard";
/// How long the latest frame of a merchant stays readable for sockets that connect later.
const LAST_FRAME_TTL_SECS: u64 = 86_400;

fn last_frame_key(merchant: &str) -> String {
    format!("rfm:dashboard:last:{}", tag(merchant))
}

/// A rendered frame, shared by every socket that sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFrame {
    pub seq: u64,
    pub json: Arc<str>,
    /// Input record times (ms) of the changes new in this frame, for `rfm_webhook_to_frame_seconds`.
    pub fresh_event_ms: Arc<[i64]>,
}

impl LiveFrame {
    pub fn render(frame: &Frame) -> LiveFrame {
        LiveFrame {
            seq: frame.seq,
            // A frame is strings and numbers only; serialising it cannot fail.
            json: serde_json::to_string(frame).unwrap_or_default().into(),
            fresh_event_ms: fresh_event_ms(frame),
        }
    }

    fn parse(json: &str) -> Option<LiveFrame> {
        let frame = serde_json::from_str::<Frame>(json).ok()?;
        Some(LiveFrame {
            seq: frame.seq,
            json: json.into(),
            fresh_event_ms: fresh_event_ms(&frame),
        })
    }
}

fn fresh_event_ms(frame: &Frame) -> Arc<[i64]> {
    let fresh = frame.deltas.iter().take(frame.fresh);
    fresh.filter_map(|d| d.event_ms).collect()
}

pub type Slot = watch::Receiver<Option<LiveFrame>>;

/// The default bound of [`Channels`]: a merchant nobody watches here is kept 5 minutes after its last frame, and
/// at most 4,096 of them (a slot holds one rendered frame, a few KB). With Redis every instance receives every
/// merchant's frames, so without a bound each instance would hold the latest frame of every shop it ever heard of.
pub const SLOT_BOUND: LiveBound = LiveBound {
    idle_ms: 5 * 60 * 1000,
    max_unpinned: 4096,
};

/// How often the slots are swept for idle ones even when no new merchant came.
const SWEEP_EVERY_MS: i64 = 10_000;

/// This process's latest frame per merchant, within a [`LiveBound`]: a slot with a socket on it is never dropped
/// (its socket would end), one without is dropped when idle or past the cap, and made again by the next frame.
pub struct Channels {
    slots: DashMap<MerchantId, SlotEntry>,
    bound: LiveBound,
    last_sweep_ms: AtomicI64,
    /// Slots left by the last sweep (see `LiveBound::overfull`).
    left_by_sweep: AtomicUsize,
}

struct SlotEntry {
    frame: watch::Sender<Option<LiveFrame>>,
    /// When the slot was made or last given a frame.
    used_ms: i64,
}

impl SlotEntry {
    fn new(frame: Option<LiveFrame>, now_ms: i64) -> Self {
        SlotEntry {
            frame: watch::Sender::new(frame),
            used_ms: now_ms,
        }
    }

    fn watched(&self) -> bool {
        self.frame.receiver_count() > 0
    }
}

impl Default for Channels {
    fn default() -> Self {
        Channels::bounded(SLOT_BOUND)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Channels {
    pub fn bounded(bound: LiveBound) -> Self {
        Channels {
            slots: DashMap::new(),
            bound,
            last_sweep_ms: AtomicI64::new(0),
            left_by_sweep: AtomicUsize::new(0),
        }
    }

    pub fn deliver(&self, merchant: &MerchantId, frame: LiveFrame) {
        self.deliver_at(merchant, frame, now_ms());
    }

    fn deliver_at(&self, merchant: &MerchantId, frame: LiveFrame, now_ms: i64) {
        match self.slots.get_mut(merchant) {
            Some(mut slot) => {
                slot.frame.send_replace(Some(frame));
                slot.used_ms = now_ms;
            }
            None => {
                self.slots
                    .insert(merchant.clone(), SlotEntry::new(Some(frame), now_ms));
            }
        }
        // Only here, after the slot's lock is released: a sweep locks every shard in turn.
        self.sweep_if_due(now_ms);
    }

    /// Applies an erasure to this process's slots: a cleared slot holds no frame until the next one; a gone
    /// shop's slot is dropped, which ends its sockets.
    pub fn erase(&self, erasure: &Erasure) {
        match erasure {
            Erasure::Clear(merchant) => {
                if let Some(slot) = self.slots.get(merchant) {
                    slot.frame.send_replace(None);
                }
            }
            Erasure::Gone(merchant) => {
                self.slots.remove(merchant);
            }
        }
    }

    pub fn subscribe(&self, merchant: &MerchantId) -> Slot {
        let now_ms = now_ms();
        let slot = self
            .slots
            .entry(merchant.clone())
            .or_insert_with(|| SlotEntry::new(None, now_ms))
            .frame
            .subscribe();
        self.sweep_if_due(now_ms);
        slot
    }

    /// Whether a socket on this instance watches `merchant`.
    pub fn watched(&self, merchant: &MerchantId) -> bool {
        self.slots.get(merchant).is_some_and(|s| s.watched())
    }

    /// Slots held, watched or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn sweep_if_due(&self, now_ms: i64) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let left = self.left_by_sweep.load(Ordering::Relaxed);
        if now_ms - last < SWEEP_EVERY_MS && !self.bound.overfull(self.slots.len(), left) {
            return;
        }
        // One sweeper at a time; the others carry on delivering.
        if self
            .last_sweep_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.sweep(now_ms);
        }
    }

    fn sweep(&self, now_ms: i64) {
        let uses = self.slots.iter().map(|slot| Use {
            key: slot.key().clone(),
            pinned: slot.watched(),
            last_used_ms: slot.used_ms,
        });
        let dropped = evictions(uses.collect::<Vec<_>>(), self.bound, now_ms);
        let mut removed = 0u64;
        for merchant in dropped {
            // Checked again under the shard's lock: a socket may have subscribed since the scan.
            if self
                .slots
                .remove_if(&merchant, |_, s| !s.watched())
                .is_some()
            {
                removed += 1;
            }
        }
        self.left_by_sweep
            .store(self.slots.len(), Ordering::Relaxed);
        if removed > 0 {
            metrics::counter!(streams::metric_names::DASHBOARD_SLOTS_DROPPED).increment(removed);
            tracing::debug!(
                dropped = removed,
                held = self.slots.len(),
                "idle dashboard slots dropped"
            );
        }
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

    /// Whether a socket on this instance watches `merchant` (sockets on other instances are not known here).
    pub fn watched(&self, merchant: &MerchantId) -> bool {
        self.local.watched(merchant)
    }

    pub async fn publish(&self, frames: Vec<(MerchantId, LiveFrame)>) {
        if let Some(redis) = &self.redis {
            match redis.publish(&frames).await {
                Ok(()) => return,
                Err(e) => {
                    streams::metric_names::error("dashboard", "fanout");
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
pub async fn last_frame(link: &RedisLink, merchant: &MerchantId) -> Option<LiveFrame> {
    let get = redis::cmd("GET")
        .arg(last_frame_key(merchant.as_str()))
        .to_owned();
    let json: Option<String> = link.query(&get).await.ok()?;
    LiveFrame::parse(&json?)
}

/// Fills `channels` from the Redis channel until the process ends, reconnecting with backoff.
pub async fn subscribe_forever(client: RedisTarget, channels: Arc<Channels>) {
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

async fn relay(client: &RedisTarget, channels: &Channels) -> redis::RedisResult<()> {
    let mut messages = client.messages(CHANNEL).await?;
    tracing::info!(channel = CHANNEL, "dashboard fan-out subscribed");
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
            fresh_event_ms: Arc::new([]),
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

    fn shop(n: usize) -> MerchantId {
        MerchantId::parse(&format!("shop-{n}.myshopify.com")).unwrap()
    }

    #[test]
    fn slots_stay_bounded_while_an_open_dashboard_keeps_its_slot() {
        let channels = Channels::default();
        let watched = MerchantId::parse("watched.myshopify.com").unwrap();
        let mut socket = channels.subscribe(&watched);
        channels.deliver(&watched, frame(1));
        let merchants = 4 * SLOT_BOUND.max_unpinned;
        for n in 0..merchants {
            channels.deliver(&shop(n), frame(1));
        }
        let cap = SLOT_BOUND.max_unpinned;
        assert!(
            channels.len() <= cap + cap / 8 + 1,
            "{} slots for {} merchants",
            channels.len(),
            merchants + 1
        );
        channels.deliver(&watched, frame(2));
        assert_eq!(
            socket.borrow_and_update().as_ref().map(|f| f.seq),
            Some(2),
            "the socket still waits on its merchant's slot"
        );
    }

    #[test]
    fn an_idle_slot_without_a_socket_goes_and_the_next_frame_brings_it_back() {
        let channels = Channels::bounded(LiveBound {
            idle_ms: 60_000,
            max_unpinned: 100,
        });
        let (quiet, watched, busy) = (shop(1), shop(2), shop(3));
        let t = now_ms();
        channels.deliver_at(&quiet, frame(1), t);
        let socket = channels.subscribe(&watched);
        channels.deliver_at(&busy, frame(1), t + 30_000);
        assert!(channels.slots.contains_key(&quiet), "not idle long enough");
        channels.deliver_at(&busy, frame(2), t + 60_000 + SWEEP_EVERY_MS);
        assert!(!channels.slots.contains_key(&quiet));
        assert!(channels.watched(&watched) && channels.slots.contains_key(&busy));
        assert!(
            socket.has_changed().is_ok(),
            "the watched slot was not dropped"
        );
        channels.deliver(&quiet, frame(3));
        assert_eq!(
            channels.subscribe(&quiet).borrow().as_ref().map(|f| f.seq),
            Some(3)
        );
    }
}
