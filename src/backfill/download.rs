//! Reading a bulk result by streaming and producing its events in acknowledged batches. The body is read chunk by
//! chunk and split into lines as they complete, so memory holds one batch, never the file. After each batch the
//! broker acknowledged, the progress row moves on; lines up to `progress.lines_done` are skipped on a resumed run,
//! and re-producing a batch that was sent but not yet recorded is harmless (stable ids).

use std::time::Duration;

use streams::sink::{EventSink, Outgoing, ProduceError};
use streams::{InputEvent, MerchantId, Topics};

use super::lines::{convert, Converted, Sealer};
use super::progress::{Progress, ProgressStore};
use super::{BackfillError, BACKFILL_RECORDS_TOTAL};

/// What the download needs besides the progress it advances.
pub(super) struct Producing<'a> {
    pub sink: &'a EventSink,
    pub topics: &'a Topics,
    pub merchant: &'a MerchantId,
    pub sealer: Sealer<'a>,
    pub batch_lines: usize,
    pub store: &'a ProgressStore,
    /// Told of every checkpoint (the CLI's progress bar).
    pub report: &'a (dyn Fn(&Progress) + Sync),
}

/// The longest JSONL line kept; a longer one (no order is anywhere near it) is dropped and reported as an empty,
/// unparsable line, so a broken or hostile result cannot make the backfill buffer it whole.
const MAX_LINE: usize = 8 << 20;

/// Splits a byte stream into lines without holding more than the unfinished one.
#[derive(Default)]
pub(super) struct LineSplitter {
    partial: Vec<u8>,
    /// The unfinished line passed [`MAX_LINE`]; its bytes are dropped until its end.
    too_long: bool,
}

impl LineSplitter {
    /// Feeds a chunk; calls `each` with every line it completed.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            if self.too_long {
                self.too_long = false;
                each(b"");
            } else if self.partial.is_empty() {
                each(&rest[..end]);
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                each(&self.partial);
                self.partial.clear();
            }
            rest = &rest[end + 1..];
        }
        self.keep(rest);
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.too_long {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.too_long = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// The last line, when the body did not end with a newline.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if std::mem::take(&mut self.too_long) {
            return Some(Vec::new());
        }
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

/// Produces `events` keyed by `merchant` and waits until the broker acknowledged every record. Records are
/// queued together rather than sent one by one, so a batch costs about one round trip.
pub(crate) async fn produce_all(
    sink: &EventSink,
    topics: &Topics,
    merchant: &MerchantId,
    events: &[InputEvent],
) -> Result<(), ProduceError> {
    let mut pending = Vec::with_capacity(events.len());
    for event in events {
        let payload = event.encode();
        let record = Outgoing {
            topic: event.kind().topic(topics),
            key: merchant.as_str(),
            payload: &payload,
            headers: &[],
        };
        match sink.enqueue(record) {
            Ok(future) => pending.push(future),
            // The local queue is full: waiting for this one lets it drain.
            Err(_) => {
                sink.send(record).await?;
            }
        }
    }
    for future in pending {
        match future.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(ProduceError::NotDelivered(e)),
            Err(_) => {
                return Err(ProduceError::NotDelivered(
                    rdkafka::error::KafkaError::Canceled,
                ))
            }
        }
    }
    Ok(())
}

fn kind_label(event: &InputEvent) -> &'static str {
    match event {
        InputEvent::OrderCreated(_) => "order",
        InputEvent::OrderCancelled(_) => "cancellation",
        InputEvent::RefundCreated(_) => "refund",
        _ => "other",
    }
}

impl Producing<'_> {
    /// Converts one line (number `line_no`, from 1), adding its events to `batch`.
    fn take_line(
        &self,
        line_no: u64,
        line: &[u8],
        batch: &mut Vec<InputEvent>,
        progress: &mut Progress,
    ) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match convert(line, self.merchant, &self.sealer) {
            Ok(Converted::Events(events)) => batch.extend(events),
            Ok(Converted::Skipped(reason)) => {
                progress.lines_skipped += 1;
                metrics::counter!(BACKFILL_RECORDS_TOTAL, "kind" => "skipped").increment(1);
                tracing::debug!(merchant = %self.merchant, line = line_no, reason, "bulk line skipped");
            }
            Err(e) => {
                progress.lines_failed += 1;
                metrics::counter!(BACKFILL_RECORDS_TOTAL, "kind" => "failed").increment(1);
                tracing::warn!(merchant = %self.merchant, line = line_no, error = %e, "bulk line not usable");
            }
        }
    }

    /// Reads the whole result, producing as it goes; progress is saved after every acknowledged batch.
    pub async fn run(
        &self,
        mut response: reqwest::Response,
        progress: &mut Progress,
    ) -> Result<(), BackfillError> {
        let resume_after = progress.lines_done;
        let mut splitter = LineSplitter::default();
        let mut line_no = 0u64;
        let mut batch = Vec::new();
        let mut lines_in_batch = 0usize;
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(60), response.chunk())
                .await
                .map_err(|_| BackfillError::Download("no data for 60 s".into()))?
                .map_err(|e| BackfillError::Download(e.without_url().to_string()))?;
            let last = chunk.is_none();
            let mut lines: Vec<Vec<u8>> = Vec::new();
            match &chunk {
                Some(bytes) => splitter.feed(bytes, |l| lines.push(l.to_vec())),
                None => lines.extend(splitter.finish()),
            }
            for line in lines {
                line_no += 1;
                if line_no <= resume_after {
                    continue;
                }
                self.take_line(line_no, &line, &mut batch, progress);
                lines_in_batch += 1;
            }
            if lines_in_batch >= self.batch_lines || (last && lines_in_batch > 0) {
                produce_all(self.sink, self.topics, self.merchant, &batch).await?;
                for event in &batch {
                    metrics::counter!(BACKFILL_RECORDS_TOTAL, "kind" => kind_label(event))
                        .increment(1);
                }
                progress.events_produced += batch.len() as u64;
                progress.lines_done = line_no;
                batch.clear();
                lines_in_batch = 0;
                self.store.save(self.merchant, progress).await?;
                (self.report)(progress);
            }
            if last {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_come_out_whole() {
        let mut splitter = LineSplitter::default();
        let mut seen = Vec::new();
        for chunk in [&b"{\"a\":1}\n{\"b\""[..], b":2}\n", b"{\"c\":3}"] {
            splitter.feed(chunk, |l| seen.push(String::from_utf8(l.to_vec()).unwrap()));
        }
        seen.extend(splitter.finish().map(|l| String::from_utf8(l).unwrap()));
        assert_eq!(seen, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn an_overlong_line_is_dropped_and_counted_as_one_unparsable_line() {
        let mut splitter = LineSplitter::default();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let big = vec![b'x'; MAX_LINE / 2 + 1];
        splitter.feed(b"{\"a\":1}\n", |l| seen.push(l.to_vec()));
        for _ in 0..3 {
            splitter.feed(&big, |l| seen.push(l.to_vec()));
        }
        assert!(
            splitter.partial.len() <= MAX_LINE,
            "never held past the cap"
        );
        splitter.feed(b"x\n{\"b\":2}\n", |l| seen.push(l.to_vec()));
        assert_eq!(
            seen,
            [b"{\"a\":1}".to_vec(), Vec::new(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(splitter.finish(), None);
    }
}
