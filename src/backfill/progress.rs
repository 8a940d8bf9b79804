//! Where a backfill's progress lives: the `backfill_runs` row of the shop in Postgres, or a map in memory when the
//! process has no database (the embedded demo, which cannot resume anyway: its broker dies with it). The row is
//! written after each batch the broker acknowledged, so it never claims a line whose events are not durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use streams::MerchantId;

/// Where a backfill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Shopify is running the bulk query.
    Running,
    /// The result is being read and produced.
    Downloading,
    Completed,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Downloading => "downloading",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Phase {
        match raw {
            "running" => Phase::Running,
            "downloading" => Phase::Downloading,
            "completed" => Phase::Completed,
            _ => Phase::Failed,
        }
    }

    /// An unfinished run that a new start continues rather than replaces.
    pub fn resumable(self) -> bool {
        matches!(self, Phase::Running | Phase::Downloading)
    }
}

/// A shop's latest backfill, as `GET /api/v1/backfill/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub bulk_operation_id: Option<String>,
    pub phase: Phase,
    pub object_count: Option<u64>,
    pub lines_done: u64,
    pub events_produced: u64,
    pub lines_skipped: u64,
    pub lines_failed: u64,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Progress {
    pub fn started(bulk_operation_id: String) -> Progress {
        let now = Utc::now();
        Progress {
            bulk_operation_id: Some(bulk_operation_id),
            phase: Phase::Running,
            object_count: None,
            lines_done: 0,
            events_produced: 0,
            lines_skipped: 0,
            lines_failed: 0,
            error: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// A run that ended before Shopify started its bulk operation (the start was refused for good).
    pub fn failed_to_start(error: String) -> Progress {
        let now = Utc::now();
        Progress {
            bulk_operation_id: None,
            phase: Phase::Failed,
            error: Some(error),
            finished_at: Some(now),
            ..Progress::started(String::new())
        }
    }

    /// Share of the result read, when Shopify said how many objects it holds.
    pub fn percent(&self) -> Option<f64> {
        self.object_count
            .filter(|n| *n > 0)
            .map(|n| (self.lines_done as f64 * 100.0 / n as f64).min(100.0))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("backfill progress: {0}")]
pub struct ProgressError(#[from] sqlx::Error);

/// The progress of every shop's latest backfill.
#[derive(Clone)]
pub enum ProgressStore {
    Postgres(PgPool),
    Memory(Arc<Mutex<HashMap<MerchantId, Progress>>>),
}

type Row = (
    Option<String>,
    String,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn from_row(r: Row) -> Progress {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Progress {
        bulk_operation_id: r.0,
        phase: Phase::parse(&r.1),
        object_count: r.2.map(count),
        lines_done: count(r.3),
        events_produced: count(r.4),
        lines_skipped: count(r.5),
        lines_failed: count(r.6),
        error: r.7,
        started_at: r.8,
        updated_at: r.9,
        finished_at: r.10,
    }
}

impl ProgressStore {
    /// This process's memory; one map for the whole process, so the status route sees a backfill that another
    /// part of the process (the embedded demo) runs.
    pub fn memory() -> ProgressStore {
        static MAP: std::sync::OnceLock<Arc<Mutex<HashMap<MerchantId, Progress>>>> =
            std::sync::OnceLock::new();
        ProgressStore::Memory(MAP.get_or_init(Arc::default).clone())
    }

    pub async fn load(&self, shop: &MerchantId) -> Result<Option<Progress>, ProgressError> {
        match self {
            ProgressStore::Memory(map) => Ok(map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(shop)
                .cloned()),
            ProgressStore::Postgres(pool) => {
                let row: Option<Row> = sqlx::query_as(
                    "SELECT bulk_operation_id, phase, object_count, lines_done, events_produced, lines_skipped,
                            lines_failed, error, started_at, updated_at, finished_at
                     FROM backfill_runs WHERE merchant_id = $1",
                )
                .bind(shop.as_str())
                .fetch_optional(pool)
                .await?;
                Ok(row.map(from_row))
            }
        }
    }

    pub async fn save(&self, shop: &MerchantId, progress: &Progress) -> Result<(), ProgressError> {
        let mut progress = progress.clone();
        progress.updated_at = Utc::now();
        match self {
            ProgressStore::Memory(map) => {
                map.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(shop.clone(), progress);
                Ok(())
            }
            ProgressStore::Postgres(pool) => {
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                sqlx::query(
                    "INSERT INTO backfill_runs (merchant_id, bulk_operation_id, phase, object_count, lines_done,
                         events_produced, lines_skipped, lines_failed, error, started_at, updated_at, finished_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (merchant_id) DO UPDATE SET bulk_operation_id = $2, phase = $3, object_count = $4,
                         lines_done = $5, events_produced = $6, lines_skipped = $7, lines_failed = $8, error = $9,
                         started_at = $10, updated_at = $11, finished_at = $12",
                )
                .bind(shop.as_str())
                .bind(&progress.bulk_operation_id)
                .bind(progress.phase.as_str())
                .bind(progress.object_count.map(n))
                .bind(n(progress.lines_done))
                .bind(n(progress.events_produced))
                .bind(n(progress.lines_skipped))
                .bind(n(progress.lines_failed))
                .bind(&progress.error)
                .bind(progress.started_at)
                .bind(progress.updated_at)
                .bind(progress.finished_at)
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }
}
