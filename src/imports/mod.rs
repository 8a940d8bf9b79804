//! Points imported from another loyalty app (issue 19): a Smile.io or LoyaltyLion customer export becomes one
//! `points.earned` event per customer, matched by Shopify customer id, else by the email's blind index in the
//! `customers` table (so no address is ever looked up in clear). The event id is `import-{source}-{customer}`:
//! a customer's balance from one app is imported once, so sending the same file again (or a later export of the
//! same app) changes nothing. Rows that cannot be used are reported by line with the reason; the others count.

pub mod csv_rows;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use streams::events::{PointsChanged, PointsSource};
use streams::sink::{EventSink, ProduceError};
use streams::{InputEvent, MerchantId, Topics, SCHEMA_VERSION};
use uuid::Uuid;

use crate::backfill::download::produce_all;
use crate::pii::KeyRing;
pub use csv_rows::{FileError, RowError, Source};

/// Largest export accepted, by the issue: 10 MB.
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("producing the points: {0}")]
    Produce(#[from] ProduceError),
    #[error("the import store: {0}")]
    Store(#[from] sqlx::Error),
}

/// One import as `GET /api/v1/imports/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ImportStatus {
    pub id: String,
    pub source: Source,
    pub status: &'static str,
    pub file_sha256: String,
    pub rows_total: u64,
    pub rows_imported: u64,
    pub rows_failed: u64,
    /// The rows not imported, by line (the header is line 1), with the reason.
    pub errors: Vec<RowError>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where import statuses are kept: Postgres, or memory when there is none (the demo).
#[derive(Clone)]
pub enum ImportStore {
    Postgres(PgPool),
    Memory(Arc<Mutex<HashMap<(MerchantId, String), ImportStatus>>>),
}

/// What an import needs.
#[derive(Clone)]
pub struct Importer {
    pub sink: EventSink,
    pub topics: Topics,
    pub keys: KeyRing,
    pub store: ImportStore,
}

/// Records produced and acknowledged together.
const PRODUCE_BATCH: usize = 5_000;

impl Importer {
    /// Imports `body` (a `source` export) for `shop` to the end and returns its status.
    pub async fn import(
        &self,
        shop: &MerchantId,
        source: Source,
        body: &[u8],
    ) -> Result<ImportStatus, ImportError> {
        let parsed = csv_rows::parse(source, body)?;
        let (mut errors, mut more_errors) = (parsed.errors, parsed.more_errors);
        let matched = self.match_customers(shop, &parsed.rows).await?;
        let now = Utc::now();
        let mut events = Vec::new();
        let mut imported = 0u64;
        for (row, customer) in parsed.rows.iter().zip(matched) {
            let Some(customer_id) = customer else {
                let reason = match (&row.email, self.indexed()) {
                    (Some(_), false) => {
                        "no Shopify customer id, and emails can only be matched with a database \
                                         and PII_INDEX_KEY"
                    }
                    _ => "no customer of this shop has this email",
                };
                if errors.len() < csv_rows::MAX_ERRORS {
                    errors.push(RowError {
                        line: row.line,
                        reason: reason.into(),
                    });
                } else {
                    more_errors += 1;
                }
                continue;
            };
            imported += 1;
            if row.points == 0 {
                continue;
            }
            events.push(InputEvent::PointsEarned(PointsChanged {
                event_id: format!("import-{}-{customer_id}", source.as_str()),
                schema_version: SCHEMA_VERSION,
                merchant_id: shop.clone(),
                customer_id,
                points: row.points,
                source: PointsSource::Admin,
                created_at: now,
            }));
        }
        // In acknowledged batches, so a large file never has all its records queued in the producer at once.
        for batch in events.chunks(PRODUCE_BATCH) {
            produce_all(&self.sink, &self.topics, shop, batch).await?;
        }
        errors.sort_by_key(|e| e.line);
        let status = ImportStatus {
            id: Uuid::new_v4().to_string(),
            source,
            status: "completed",
            file_sha256: hex::encode(Sha256::digest(body)),
            rows_total: imported + errors.len() as u64 + more_errors,
            rows_imported: imported,
            rows_failed: errors.len() as u64 + more_errors,
            errors,
            created_at: now,
            finished_at: Some(Utc::now()),
        };
        self.save(shop, &status).await?;
        tracing::info!(merchant = %shop, import = %status.id, source = source.as_str(), imported,
            failed = status.rows_failed, "points imported");
        Ok(status)
    }

    fn indexed(&self) -> bool {
        matches!(self.store, ImportStore::Postgres(_))
            && self.keys.email_index("probe@example.com").is_some()
    }

    /// The customer of each row: its Shopify id, else the customer whose email has the same blind index.
    async fn match_customers(
        &self,
        shop: &MerchantId,
        rows: &[csv_rows::Row],
    ) -> Result<Vec<Option<u64>>, ImportError> {
        let indexes: Vec<Option<String>> = rows
            .iter()
            .map(|r| match (r.shopify_id, &r.email) {
                (None, Some(email)) => self.keys.email_index(email),
                _ => None,
            })
            .collect();
        let wanted: Vec<String> = indexes.iter().flatten().cloned().collect();
        let mut by_index: HashMap<String, u64> = HashMap::new();
        if let (ImportStore::Postgres(pool), false) = (&self.store, wanted.is_empty()) {
            // Two customers with one email (Shopify allows it for guests): the lowest id, so a re-import picks the same.
            let found: Vec<(String, i64)> = sqlx::query_as(
                "SELECT email_index, min(customer_id) FROM customers
                 WHERE merchant_id = $1 AND email_index = ANY($2) GROUP BY email_index",
            )
            .bind(shop.as_str())
            .bind(&wanted)
            .fetch_all(pool)
            .await?;
            by_index.extend(found.into_iter().map(|(i, c)| (i, c as u64)));
        }
        Ok(rows
            .iter()
            .zip(indexes)
            .map(|(row, index)| {
                row.shopify_id
                    .or_else(|| index.and_then(|i| by_index.get(&i).copied()))
            })
            .collect())
    }

    async fn save(&self, shop: &MerchantId, status: &ImportStatus) -> Result<(), ImportError> {
        match &self.store {
            ImportStore::Memory(map) => {
                map.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((shop.clone(), status.id.clone()), status.clone());
            }
            ImportStore::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO point_imports (id, merchant_id, source, file_sha256, status, rows_total,
                         rows_imported, rows_failed, errors, created_at, finished_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&status.id)
                .bind(shop.as_str())
                .bind(status.source.as_str())
                .bind(&status.file_sha256)
                .bind(status.status)
                .bind(status.rows_total as i64)
                .bind(status.rows_imported as i64)
                .bind(status.rows_failed as i64)
                .bind(sqlx::types::Json(&status.errors))
                .bind(status.created_at)
                .bind(status.finished_at)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// The status of `shop`'s import `id`, as JSON; `None` when the shop has no such import.
    pub async fn status(
        &self,
        shop: &MerchantId,
        id: &str,
    ) -> Result<Option<serde_json::Value>, ImportError> {
        match &self.store {
            ImportStore::Memory(map) => Ok(map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(shop.clone(), id.to_owned()))
                .map(|s| serde_json::to_value(s).unwrap_or_default())),
            ImportStore::Postgres(pool) => {
                let row: Option<(serde_json::Value,)> = sqlx::query_as(
                    "SELECT json_build_object('id', id, 'source', source, 'status', status, 'file_sha256', file_sha256,
                         'rows_total', rows_total, 'rows_imported', rows_imported, 'rows_failed', rows_failed,
                         'errors', errors, 'created_at', created_at, 'finished_at', finished_at)
                     FROM point_imports WHERE merchant_id = $1 AND id = $2",
                )
                .bind(shop.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await?;
                Ok(row.map(|(v,)| v))
            }
        }
    }
}
