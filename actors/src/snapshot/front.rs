//! The front of a snapshot: everything before the merchants' customers (partition, offsets, the incarnation of the
//! topics, and one entry per merchant). Stored alone it is a *manifest* (`pieces`): a partition's snapshot kept as
//! one manifest row plus one piece per merchant, so a round rewrites only the merchants that changed. Read without
//! decoding any customer, so the caller can load configurations and check the incarnation first.

use std::collections::{BTreeMap, HashSet};

use streams::MerchantId;

use super::wire::{checksum, put_len, put_signed, put_str, Reader};
use super::{SnapshotError, SnapshotOffsets, MAX_EXPONENT};
pub(crate) use crate::ledger::PieceMark;
use SnapshotError::Corrupt;

/// Before format 5 an output mark was stored as an input offset under this prefix, which Kafka topic names cannot
/// contain.
const LEGACY_MARK: char = '>';

/// The last record a snapshot applied from one input topic: enough to tell whether the log a snapshot is restored
/// over is the log it was taken from, or a new incarnation of the topic (recreated, or another broker) whose
/// records at the same offsets are other records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStamp {
    pub offset: i64,
    /// The record's timestamp in milliseconds, -1 when it had none.
    pub timestamp_ms: i64,
    /// [`RecordStamp::digest`] of its key and payload.
    pub digest: u64,
}

impl RecordStamp {
    pub fn of(offset: i64, timestamp_ms: Option<i64>, key: Option<&[u8]>, payload: &[u8]) -> Self {
        RecordStamp {
            offset,
            timestamp_ms: timestamp_ms.unwrap_or(-1),
            digest: RecordStamp::digest(key, payload),
        }
    }

    /// Stored in snapshots, so it must never change: the snapshot checksum of the payload, mixed with the
    /// checksum of the key rotated (so key and payload cannot be swapped), and a distinct value for no key.
    pub fn digest(key: Option<&[u8]>, payload: &[u8]) -> u64 {
        let key = key.map_or(0x6b65_795f_6e6f_6e65, |k| checksum(k).rotate_left(17));
        checksum(payload) ^ key
    }
}

/// Which incarnation of the topics a snapshot covers: the broker's cluster id, when it gave one, and the last
/// record applied from each input topic (topics with no record applied have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incarnation {
    pub cluster_id: Option<String>,
    pub last: BTreeMap<String, RecordStamp>,
}

/// One merchant as the front lists it. The piece length and checksum are format 4's; older snapshots have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MerchantEntry {
    pub(super) id: MerchantId,
    pub(super) fingerprint: u64,
    pub(super) exponent: u8,
    pub(super) piece: Option<PieceMark>,
}

/// A piece's mark is computed with the snapshot's own checksum.
pub(crate) fn piece_mark(piece: &[u8]) -> PieceMark {
    PieceMark {
        len: piece.len(),
        sum: checksum(piece),
    }
}

/// Everything before the merchants' customers, and a reader positioned after it.
pub(super) struct Front<'a> {
    pub(super) version: u16,
    pub(super) partition: i32,
    pub(super) offsets: SnapshotOffsets,
    pub(super) incarnation: Incarnation,
    pub(super) merchants: Vec<MerchantEntry>,
    pub(super) rest: Reader<'a>,
}

/// Writes the front in the newest format.
pub(super) fn write_front(
    out: &mut Vec<u8>,
    partition: i32,
    offsets: &SnapshotOffsets,
    incarnation: &Incarnation,
    merchants: &[MerchantEntry],
) {
    out.extend_from_slice(&partition.to_le_bytes());
    put_len(out, offsets.inputs.len());
    for (topic, offset) in &offsets.inputs {
        put_str(out, topic);
        put_signed(out, *offset);
    }
    put_len(out, offsets.marks.len());
    for (partition, high) in &offsets.marks {
        put_signed(out, i64::from(*partition));
        put_signed(out, *high);
    }
    put_str(out, incarnation.cluster_id.as_deref().unwrap_or(""));
    put_len(out, incarnation.last.len());
    for (topic, stamp) in &incarnation.last {
        put_str(out, topic);
        put_signed(out, stamp.offset);
        put_signed(out, stamp.timestamp_ms);
        out.extend_from_slice(&stamp.digest.to_le_bytes());
    }
    put_len(out, merchants.len());
    for entry in merchants {
        put_str(out, entry.id.as_str());
        out.extend_from_slice(&entry.fingerprint.to_le_bytes());
        out.push(entry.exponent);
        // Every entry written by this build has its piece.
        let mark = entry.piece.unwrap_or(PieceMark { len: 0, sum: 0 });
        put_len(out, mark.len);
        out.extend_from_slice(&mark.sum.to_le_bytes());
    }
}

impl<'a> Front<'a> {
    /// Reads the front of `content` (what lies between a frame's header and checksum) in format `version`.
    pub(super) fn read(version: u16, content: &'a [u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader(content);
        let partition = i32::from_le_bytes(r.array()?);
        let offsets = read_offsets(version, &mut r)?;
        let incarnation = if version >= 4 {
            read_incarnation(&mut r)?
        } else {
            Incarnation::default()
        };
        let count = r.count(10)?;
        let mut merchants = Vec::with_capacity(count);
        let mut seen = HashSet::with_capacity(count);
        for _ in 0..count {
            let raw = r.str()?;
            let id = MerchantId::parse(raw)
                .ok()
                .filter(|id| id.as_str() == raw && seen.insert(raw))
                .ok_or(Corrupt("invalid or repeated merchant id"))?;
            let fingerprint = u64::from_le_bytes(r.array()?);
            let exponent = r.u8()?;
            if exponent > MAX_EXPONENT {
                return Err(Corrupt("currency exponent out of range"));
            }
            let piece = if version >= 4 {
                let len = usize::try_from(r.varint()?).map_err(|_| Corrupt("piece too long"))?;
                let sum = u64::from_le_bytes(r.array()?);
                Some(PieceMark { len, sum })
            } else {
                None
            };
            merchants.push(MerchantEntry {
                id,
                fingerprint,
                exponent,
                piece,
            });
        }
        Ok(Front {
            version,
            partition,
            offsets,
            incarnation,
            merchants,
            rest: r,
        })
    }
}

/// The input offsets and output marks; before version 5 the marks hide among the inputs behind [`LEGACY_MARK`].
fn read_offsets(version: u16, r: &mut Reader<'_>) -> Result<SnapshotOffsets, SnapshotError> {
    let mut offsets = SnapshotOffsets::default();
    for _ in 0..r.count(2)? {
        let topic = r.str()?;
        let offset = r.signed()?;
        let fresh = match topic.strip_prefix(LEGACY_MARK) {
            Some(mark) if version < 5 => {
                let partition = mark
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<i32>().ok())
                    .ok_or(Corrupt("an output mark names no partition"))?;
                offsets.marks.insert(partition, offset).is_none()
            }
            _ => offsets.inputs.insert(topic.to_owned(), offset).is_none(),
        };
        if !fresh {
            return Err(Corrupt("a topic is listed twice"));
        }
    }
    if version >= 5 {
        for _ in 0..r.count(2)? {
            let partition =
                i32::try_from(r.signed()?).map_err(|_| Corrupt("output partition out of range"))?;
            if offsets.marks.insert(partition, r.signed()?).is_some() {
                return Err(Corrupt("an output partition is marked twice"));
            }
        }
    }
    Ok(offsets)
}

fn read_incarnation(r: &mut Reader<'_>) -> Result<Incarnation, SnapshotError> {
    let cluster = r.str()?;
    let cluster_id = (!cluster.is_empty()).then(|| cluster.to_owned());
    let mut last = BTreeMap::new();
    for _ in 0..r.count(11)? {
        let topic = r.str()?.to_owned();
        let offset = r.signed()?;
        if offset < 0 {
            return Err(Corrupt("a record stamp with a negative offset"));
        }
        let stamp = RecordStamp {
            offset,
            timestamp_ms: r.signed()?,
            digest: u64::from_le_bytes(r.array()?),
        };
        if last.insert(topic, stamp).is_some() {
            return Err(Corrupt("a topic is stamped twice"));
        }
    }
    Ok(Incarnation { cluster_id, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_tells_records_apart_by_key_payload_and_time() {
        let stamp = RecordStamp::of(5, Some(1_000), Some(b"shop"), b"{}");
        assert_eq!(stamp, RecordStamp::of(5, Some(1_000), Some(b"shop"), b"{}"));
        assert_ne!(stamp.digest, RecordStamp::digest(Some(b"shop2"), b"{}"));
        assert_ne!(stamp.digest, RecordStamp::digest(None, b"{}"));
        assert_ne!(stamp.digest, RecordStamp::digest(Some(b"{}"), b"shop"));
        assert_eq!(RecordStamp::of(5, None, None, b"").timestamp_ms, -1);
    }

    #[test]
    fn the_incarnation_round_trips_and_its_topics_are_unique() {
        let incarnation = Incarnation {
            cluster_id: Some("cluster-a".into()),
            last: BTreeMap::from([
                (
                    "a".to_owned(),
                    RecordStamp::of(9, Some(7), Some(b"k"), b"v"),
                ),
                ("b".to_owned(), RecordStamp::of(0, None, None, b"")),
            ]),
        };
        let mut out = Vec::new();
        write_front(&mut out, 3, &SnapshotOffsets::default(), &incarnation, &[]);
        let front = Front::read(5, &out).unwrap();
        assert_eq!(front.incarnation, incarnation);
        assert_eq!(front.partition, 3);
        assert!(front.rest.0.is_empty());
        // The same topic twice: the second stamp would silently win.
        let mut twice = 3i32.to_le_bytes().to_vec();
        put_len(&mut twice, 0);
        put_str(&mut twice, "");
        put_len(&mut twice, 2);
        for _ in 0..2 {
            put_str(&mut twice, "a");
            put_signed(&mut twice, 1);
            put_signed(&mut twice, 1);
            twice.extend_from_slice(&[0; 8]);
        }
        put_len(&mut twice, 0);
        assert_eq!(
            Front::read(4, &twice).err(),
            Some(Corrupt("a topic is stamped twice"))
        );
    }

    #[test]
    fn output_marks_are_typed_and_read_from_the_older_inline_form() {
        let offsets = SnapshotOffsets {
            inputs: BTreeMap::from([("orders.create".to_owned(), 12)]),
            marks: BTreeMap::from([(0, 40), (2, 7)]),
        };
        let mut out = Vec::new();
        write_front(&mut out, 1, &offsets, &Incarnation::default(), &[]);
        assert_eq!(Front::read(5, &out).unwrap().offsets, offsets);

        let legacy = |marks: &[(&str, i64)]| {
            let mut out = 1i32.to_le_bytes().to_vec();
            put_len(&mut out, 1 + marks.len());
            put_str(&mut out, "orders.create");
            put_signed(&mut out, 12);
            for (key, high) in marks {
                put_str(&mut out, key);
                put_signed(&mut out, *high);
            }
            put_str(&mut out, "");
            put_len(&mut out, 0);
            put_len(&mut out, 0);
            out
        };
        let v4 = legacy(&[(">rfm.updated:0", 40), (">rfm.updated:2", 7)]);
        assert_eq!(Front::read(4, &v4).unwrap().offsets, offsets);
        for bad in [">rfm.updated", ">rfm.updated:x"] {
            assert_eq!(
                Front::read(4, &legacy(&[(bad, 1)])).err(),
                Some(Corrupt("an output mark names no partition"))
            );
        }
        assert_eq!(
            Front::read(4, &legacy(&[(">a:0", 1), (">b:0", 2)])).err(),
            Some(Corrupt("a topic is listed twice"))
        );
    }
}
