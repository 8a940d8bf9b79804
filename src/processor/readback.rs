//! Reading back what a partition's previous owner published: the `rfm.updated` records after the marks a snapshot
//! saved, up to the end of the topic. Restores use them to continue each customer's version sequence instead of
//! re-publishing versions that are already out (docs/RECOVERY.md).
//!
//! A plain assigned consumer (no group, no commits; `streams::tail`), run on a blocking thread: it reads a bounded
//! tail once.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use actors::PublishedVersion;
use streams::tail::{read_to_end, reader, TailError};
use streams::MerchantId;

/// What to read: every partition of `topic` from its mark (the start of the partition when it has none) to the
/// high watermark seen now, keeping records of `merchants` only.
pub struct ReadBack {
    pub brokers: String,
    pub topic: String,
    pub marks: BTreeMap<i32, i64>,
    pub merchants: HashSet<MerchantId>,
    pub deadline: Duration,
}

impl ReadBack {
    pub fn run(self) -> Result<Vec<PublishedVersion>, TailError> {
        let consumer = reader(&self.brokers, "loyalnest-rfm-readback")?;
        let partitions = streams::source::partition_count(&consumer, &self.topic)?;
        let from: BTreeMap<i32, i64> = (0..partitions)
            .map(|p| (p, self.marks.get(&p).copied().unwrap_or(0)))
            .collect();
        let mut found = Vec::new();
        // The key is the merchant: records of the merchants other partitions own are most of the topic, and are
        // skipped without decoding their JSON.
        let names: HashSet<&str> = self
            .merchants
            .iter()
            .map(actors::outputs::record_key)
            .collect();
        let ours = |key: Option<&[u8]>| {
            key.and_then(|k| std::str::from_utf8(k).ok())
                .is_none_or(|k| names.contains(k))
        };
        read_to_end(
            &consumer,
            &self.topic,
            &from,
            self.deadline,
            |key, payload| {
                if ours(key) {
                    found.extend(self.decode(payload));
                }
            },
        )?;
        Ok(found)
    }

    /// Records of other merchants or that do not parse (written by another producer) are not ours to restore.
    fn decode(&self, payload: &[u8]) -> Option<PublishedVersion> {
        actors::outputs::published_version(payload)
            .filter(|version| self.merchants.contains(&version.merchant))
    }
}
