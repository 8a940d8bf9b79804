//! Partition snapshots in Postgres (migration `20261215000001_snapshots`): per (group, partition) a manifest row
//! and one piece row per merchant. A round writes, in one transaction, the pieces of the merchants that changed,
//! deletes the pieces of merchants the manifest no longer lists, and replaces the manifest, so a reader sees one
//! round or the next and never a mixture (and `actors::assemble` would refuse one anyway).
//!
//! Rounds are numbered and stamped with their writer. An incremental round names the round it builds on and is
//! refused when the row holds another: a second owner (one the group dropped that still writes) or a commit whose
//! answer was lost would otherwise leave pieces of two states under one manifest. A full round needs no base.

use std::collections::HashMap;
use std::time::Duration;

use actors::SnapshotRound;
use sqlx::{PgPool, Postgres, Transaction};

use super::{Loaded, Saved, Stamp, StoreError, Stored};

/// A round or a load that takes longer than this is reported as failed: the round is retried, the restore
/// postponed, and a hand-over does not wait on a database that does not answer.
const BOUND: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct PgSnapshots {
    pool: PgPool,
    group: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Waits for `work` at most `BOUND`: a connection that dropped mid-query must not hold a round, a hand-over or
/// the loop for good.
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(BOUND, work)
        .await
        .map_err(|_| unavailable(format!("no answer within {BOUND:?}")))?
}

impl PgSnapshots {
    pub fn new(pool: PgPool, group: &str) -> Self {
        PgSnapshots {
            pool,
            group: group.to_owned(),
        }
    }

    pub async fn save(
        &self,
        round: SnapshotRound,
        base: Option<&Stamp>,
        writer: &str,
    ) -> Result<Saved, StoreError> {
        bounded(self.write(round, base, writer)).await
    }

    async fn write(
        &self,
        round: SnapshotRound,
        base: Option<&Stamp>,
        writer: &str,
    ) -> Result<Saved, StoreError> {
        let (partition, bytes, pieces) = (round.partition, round.len(), round.pieces.len());
        // An incremental round without a base could only be laid over an unknown state.
        if !round.full && base.is_none() {
            return Err(StoreError::Conflict);
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let stamp = self
            .next_stamp(&mut tx, partition, base.filter(|_| !round.full), writer)
            .await?;
        let listed: Vec<String> = round.merchants.iter().map(|m| m.to_string()).collect();
        self.put_pieces(&mut tx, partition, round.pieces, &listed)
            .await?;
        sqlx::query(
            "INSERT INTO snapshot_manifests (group_id, partition, manifest, writer, round, written_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (group_id, partition) DO UPDATE SET manifest = EXCLUDED.manifest,
               writer = EXCLUDED.writer, round = EXCLUDED.round, written_at = EXCLUDED.written_at",
        )
        .bind(&self.group)
        .bind(partition)
        .bind(&round.manifest)
        .bind(&stamp.writer)
        .bind(stamp.round)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Saved {
            bytes,
            pieces,
            stamp: Some(stamp),
            tail: None,
        })
    }

    /// Takes the partition's turn and numbers the new round. With a `base` (an incremental round) the stored round
    /// must be that one.
    async fn next_stamp(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        partition: i32,
        base: Option<&Stamp>,
        writer: &str,
    ) -> Result<Stamp, StoreError> {
        // Two writers of one partition take turns; without a row yet, `FOR UPDATE` would lock nothing.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
            .bind(&self.group)
            .bind(i64::from(partition))
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
        let held: Option<(String, i64)> = sqlx::query_as(
            "SELECT writer, round FROM snapshot_manifests WHERE group_id = $1 AND partition = $2",
        )
        .bind(&self.group)
        .bind(partition)
        .fetch_optional(&mut **tx)
        .await
        .map_err(unavailable)?;
        let held = held.map(|(writer, round)| Stamp { writer, round });
        if base.is_some() && held.as_ref() != base {
            return Err(StoreError::Conflict);
        }
        Ok(Stamp {
            writer: writer.to_owned(),
            round: held.map_or(1, |s| s.round + 1),
        })
    }

    /// Writes the changed pieces and deletes those of merchants the manifest (`listed`) no longer names.
    async fn put_pieces(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        partition: i32,
        pieces: Vec<(streams::MerchantId, Vec<u8>)>,
        listed: &[String],
    ) -> Result<(), StoreError> {
        let (merchants, bodies): (Vec<String>, Vec<Vec<u8>>) = pieces
            .into_iter()
            .map(|(merchant, piece)| (merchant.to_string(), piece))
            .unzip();
        sqlx::query(
            "INSERT INTO snapshot_pieces (group_id, partition, merchant_id, piece)
             SELECT $1, $2, m, p FROM UNNEST($3::text[], $4::bytea[]) AS x(m, p)
             ON CONFLICT (group_id, partition, merchant_id) DO UPDATE SET piece = EXCLUDED.piece",
        )
        .bind(&self.group)
        .bind(partition)
        .bind(&merchants)
        .bind(&bodies)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM snapshot_pieces
             WHERE group_id = $1 AND partition = $2 AND merchant_id <> ALL($3::text[])",
        )
        .bind(&self.group)
        .bind(partition)
        .bind(listed)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// The partition's manifest and pieces as of one committed round, with its stamp.
    pub async fn load(&self, partition: i32) -> Result<Option<Loaded>, StoreError> {
        bounded(self.read(partition)).await
    }

    async fn read(&self, partition: i32) -> Result<Option<Loaded>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Manifest and pieces from one database snapshot, so a round committed in between cannot mix in.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let row: Option<(Vec<u8>, String, i64)> = sqlx::query_as(
            "SELECT manifest, writer, round FROM snapshot_manifests
             WHERE group_id = $1 AND partition = $2",
        )
        .bind(&self.group)
        .bind(partition)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((manifest, writer, round)) = row else {
            return Ok(None);
        };
        let pieces: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT merchant_id, piece FROM snapshot_pieces WHERE group_id = $1 AND partition = $2",
        )
        .bind(&self.group)
        .bind(partition)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(Loaded {
            stored: Stored::Pieces {
                manifest,
                pieces: pieces.into_iter().collect::<HashMap<_, _>>(),
            },
            stamp: Some(Stamp { writer, round }),
        }))
    }

    pub async fn mark_alive(&self, ttl: Duration) -> Result<(), StoreError> {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let write = sqlx::query(
            "INSERT INTO snapshot_owners (group_id, alive_until)
             VALUES ($1, now() + $2 * interval '1 millisecond')
             ON CONFLICT (group_id) DO UPDATE SET alive_until = EXCLUDED.alive_until",
        )
        .bind(&self.group)
        .bind(ms)
        .execute(&self.pool);
        bounded(async { write.await.map(drop).map_err(unavailable) }).await
    }

    pub async fn someone_alive(&self) -> Result<bool, StoreError> {
        let read = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM snapshot_owners WHERE group_id = $1 AND alive_until > now())",
        )
        .bind(&self.group)
        .fetch_one(&self.pool);
        bounded(async { read.await.map_err(unavailable) }).await
    }
}
