//! Streaming a merchant's customers out as CSV (RFC 4180: a header, CRLF line ends, fields quoted when they need
//! it), one JSON array, or newline-delimited JSON. One query is streamed from Postgres by a task that encodes rows
//! into chunks and hands them to the response through a bounded channel, so a slow client holds the query back
//! instead of the server buffering the shop; the query runs under a time limit and an [`ExportPermit`].

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use streams::MerchantId;

use std::time::Duration;

use super::{ExportPermit, Listed, SegmentKey, COLUMNS};
use crate::store::Store;

/// Chunks are sent when they pass this size; with [`CHANNEL_CHUNKS`] in flight, the bound on what one export holds.
const CHUNK_BYTES: usize = 64 * 1024;
const CHANNEL_CHUNKS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
}

impl Format {
    pub fn parse(raw: &str) -> Option<Format> {
        match raw {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        }
    }
}

const HEADER: [&str; 11] = [
    "customer_id",
    "segment",
    "recency",
    "frequency",
    "monetary",
    "score",
    "lifecycle_stage",
    "orders",
    "net_spend",
    "last_order_at",
    "version",
];

/// One CSV field, quoted (with quotes doubled) when it holds a comma, a quote or a line break.
fn csv_field(out: &mut BytesMut, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.put_u8(b'"');
        out.put_slice(field.replace('"', "\"\"").as_bytes());
        out.put_u8(b'"');
    } else {
        out.put_slice(field.as_bytes());
    }
}

fn csv_line<'a>(out: &mut BytesMut, fields: impl IntoIterator<Item = &'a str>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        csv_field(out, field);
    }
    out.put_slice(b"\r\n");
}

fn csv_row(out: &mut BytesMut, c: &Listed) {
    let last = c.last_order_at.map(|t| t.to_rfc3339()).unwrap_or_default();
    let numbers = [
        c.customer_id.to_string(),
        c.recency.to_string(),
        c.frequency.to_string(),
        c.monetary.to_string(),
        c.orders.to_string(),
        c.version.to_string(),
    ];
    csv_line(
        out,
        [
            numbers[0].as_str(),
            &c.segment,
            &numbers[1],
            &numbers[2],
            &numbers[3],
            &c.score,
            &c.lifecycle_stage,
            &numbers[4],
            &c.net_spend,
            &last,
            &numbers[5],
        ],
    );
}

/// Writes the row in `format`; `first` tells a JSON array whether a comma comes before it.
fn encode(out: &mut BytesMut, format: Format, row: &Listed, first: bool) {
    match format {
        Format::Csv => csv_row(out, row),
        Format::Json | Format::Ndjson => {
            if format == Format::Json && !first {
                out.put_u8(b',');
            }
            // Serialising this plain struct cannot fail.
            out.put_slice(&serde_json::to_vec(row).unwrap_or_default());
            if format == Format::Ndjson {
                out.put_u8(b'\n');
            }
        }
    }
}

/// What one export reads and how.
pub struct ExportJob {
    pub store: Store,
    pub merchant: MerchantId,
    pub segment: Option<SegmentKey>,
    pub format: Format,
    /// Its place among the exports running now, given back when the query is done with.
    pub permit: ExportPermit,
    pub time_limit: Duration,
}

/// The merchant's customers (of one segment, if given) by ascending id, encoded in `format`, as a stream of
/// chunks. A database error after the first chunk, or the time limit, ends the stream with an error, which cuts
/// the response short (the client sees a truncated body, never a complete-looking one).
pub fn export(job: ExportJob) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        let ExportJob {
            store,
            merchant,
            segment,
            format,
            permit,
            time_limit,
        } = job;
        let run = produce(&store, &merchant, segment.as_ref(), format, &tx);
        let failure = match tokio::time::timeout(time_limit, run).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "stopped at the time limit of {} s",
                time_limit.as_secs()
            )),
        };
        // The query's future is gone, and its connection with it: give the place back before waiting on a reader
        // who may never read the error.
        drop(permit);
        if let Some(reason) = failure {
            tracing::warn!(merchant = %merchant, error = %reason, "export cut short");
            let _ = tx.send(Err(std::io::Error::other(reason))).await;
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

async fn produce(
    store: &Store,
    merchant: &MerchantId,
    segment: Option<&SegmentKey>,
    format: Format,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), sqlx::Error> {
    let mut chunk = BytesMut::with_capacity(CHUNK_BYTES + 1024);
    match format {
        Format::Csv => csv_line(&mut chunk, HEADER),
        Format::Json => chunk.put_u8(b'['),
        Format::Ndjson => {}
    }
    let sql = format!(
        "{COLUMNS} WHERE merchant_id = $1 AND ($2::text IS NULL OR segment = $2) ORDER BY customer_id"
    );
    let mut rows = sqlx::query_as::<_, Listed>(&sql)
        .bind(merchant.as_str())
        .bind(segment.map(SegmentKey::as_str))
        .fetch(store.pool());
    let mut first = true;
    while let Some(row) = rows.try_next().await? {
        encode(&mut chunk, format, &row, first);
        first = false;
        if chunk.len() >= CHUNK_BYTES && tx.send(Ok(chunk.split().freeze())).await.is_err() {
            // The client went away.
            return Ok(());
        }
    }
    // The connection goes back to the pool now, not after a slow reader took the last chunk.
    drop(rows);
    if format == Format::Json {
        chunk.put_u8(b']');
    }
    let _ = tx.send(Ok(chunk.freeze())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut out = BytesMut::new();
        csv_line(&mut out, ["plain", "a,b", "say \"hi\"", "two\nlines", ""]);
        assert_eq!(
            &out[..],
            b"plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }
}
