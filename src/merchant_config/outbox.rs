//! The config outbox: a saved configuration reaches the config topic only after Postgres committed it.
//!
//! A save writes the configuration, its audit row and an outbox row holding the encoded `ConfigChanged` record in
//! one transaction. The relay takes unsent rows oldest first, holding them locked (`FOR UPDATE`, so two instances'
//! relays never send one merchant's saves out of order), produces each to `rfm.config` keyed by the merchant, and
//! marks what the broker acknowledged as sent. A save whose send failed stays unsent and is sent by the next pass
//! of any instance's relay; a crash after the send and before the mark sends it again, which the partition ignores
//! by the record's revision (`MerchantState::accepts_config`). A transaction that fails to commit leaves no row,
//! so nothing is sent for it.

use std::time::Duration;

use chrono::Utc;
use functions::RfmConfig;
use sqlx::{Postgres, Transaction};
use streams::events::{ConfigChanged, InputEvent, SCHEMA_VERSION};
use streams::sink::{EventSink, Outgoing, ProduceError};
use streams::MerchantId;

use crate::store::{Store, StoreError};

/// Rows one relay transaction takes.
const BATCH: i64 = 100;

/// How long sent rows are kept (to see what was sent when), before a relay pass deletes them.
const KEEP_SENT: &str = "7 days";
const PRUNE_EVERY_PASSES: u64 = 3_600;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a saved configuration could not be sent: {0}")]
    Produce(#[from] ProduceError),
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        RelayError::Store(e.into())
    }
}

/// Queues `config` as `merchant`'s save number `revision`, in the caller's transaction.
pub(super) async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    merchant: &MerchantId,
    revision: i64,
    config: &RfmConfig,
) -> Result<(), sqlx::Error> {
    let event = InputEvent::ConfigChanged(ConfigChanged {
        event_id: format!("config-{}", uuid::Uuid::new_v4().simple()),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        config: config.clone(),
        saved_at: Utc::now(),
        revision: u64::try_from(revision).ok(),
    });
    sqlx::query(
        "INSERT INTO rfm_config_outbox (merchant_id, revision, payload) VALUES ($1, $2, $3)",
    )
    .bind(merchant.as_str())
    .bind(revision)
    .bind(event.encode())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sends the outbox; one per instance that takes saves.
pub struct ConfigRelay {
    store: Store,
    sink: EventSink,
    topic: String,
}

impl ConfigRelay {
    pub fn new(store: Store, sink: EventSink, topic: String) -> Self {
        ConfigRelay { store, sink, topic }
    }

    /// Sends every unsent row, oldest first; stops at the first that fails (the rest keep their order for the next
    /// pass). Returns how many were sent.
    pub async fn relay_pending(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let (sent, taken) = self.relay_batch().await?;
            total += sent;
            if taken < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// One transaction: up to [`BATCH`] rows locked, sent in order, the acknowledged ones marked.
    async fn relay_batch(&self) -> Result<(usize, usize), RelayError> {
        let mut tx = self.store.pool().begin().await?;
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, merchant_id, payload FROM rfm_config_outbox WHERE sent_at IS NULL
             ORDER BY id LIMIT $1 FOR UPDATE",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut sent = Vec::with_capacity(rows.len());
        let mut failure = None;
        for (id, merchant, payload) in &rows {
            let record = Outgoing {
                topic: &self.topic,
                key: merchant,
                payload,
                headers: &[],
            };
            match self.sink.send(record).await {
                Ok(_) => sent.push(*id),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        sqlx::query("UPDATE rfm_config_outbox SET sent_at = now() WHERE id = ANY($1)")
            .bind(&sent)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if !sent.is_empty() {
            tracing::info!(sent = sent.len(), "saved configurations sent to the engine");
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok((sent.len(), rows.len())),
        }
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        let sql =
            format!("DELETE FROM rfm_config_outbox WHERE sent_at < now() - interval '{KEEP_SENT}'");
        sqlx::query(&sql).execute(self.store.pool()).await?;
        Ok(())
    }

    /// Passes every `every`, for saves whose send failed or whose instance stopped before sending.
    pub async fn run(self: std::sync::Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for pass in 0u64.. {
            ticker.tick().await;
            if let Err(e) = self.relay_pending().await {
                tracing::warn!(error = %e, "config outbox not sent; retrying on the next pass");
                continue;
            }
            if pass % PRUNE_EVERY_PASSES == 0 {
                if let Err(e) = self.prune().await {
                    tracing::debug!(error = %e, "config outbox not pruned");
                }
            }
        }
    }
}
