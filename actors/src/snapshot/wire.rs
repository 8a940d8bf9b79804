//! The snapshot's byte level: the frame (magic, format version, total length, checksum), LEB128 varints, ids as
//! gaps, and a reader that treats its input as untrusted. Kept apart from the state codec so that file reads as the
//! layout of the state, and so the frame can be tested on its own.

use super::SnapshotError;
use super::SnapshotError::Corrupt;

/// A whole partition snapshot.
pub(super) const MAGIC: &[u8; 4] = b"LNRS";
/// A manifest: the front of a snapshot stored apart from its merchants' pieces (`pieces`).
pub(super) const MANIFEST_MAGIC: &[u8; 4] = b"LNRM";
/// Version 2 dropped version 1's order-index flag bit and list (the index is rebuilt from the order records).
/// Version 3 added each merchant's erasure tombstones. Version 4 added the incarnation of the topics and, per
/// merchant, the length and checksum of its piece, so a snapshot can be stored and checked merchant by merchant.
pub(super) const FORMAT_VERSION: u16 = 6;
/// The oldest version this build still reads.
pub(super) const OLDEST_VERSION: u16 = 1;
/// Magic, version and total length: the part read before the checksum can be checked.
pub(super) const HEADER: usize = 14;
pub(super) const TRAILER: usize = 8;

/// A buffer holding a snapshot's header, its total length still to be filled in by [`seal`].
pub(super) fn begin(capacity: usize) -> Vec<u8> {
    begin_framed(MAGIC, capacity)
}

/// [`begin`] for a frame with another magic (a manifest).
pub(super) fn begin_framed(magic: &[u8; 4], capacity: usize) -> Vec<u8> {
    begin_versioned(magic, FORMAT_VERSION, capacity)
}

/// [`begin_framed`] in an older format `version`: for content that is already in that format.
pub(super) fn begin_versioned(magic: &[u8; 4], version: u16, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// Fills in the total length and appends the checksum of everything before it.
pub(super) fn seal(out: &mut Vec<u8>) {
    let total = (out.len() + TRAILER) as u64;
    out[MAGIC.len() + 2..HEADER].copy_from_slice(&total.to_le_bytes());
    let sum = checksum(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// Checks the frame (magic, version, length, checksum) and returns the format version and what lies between header
/// and checksum.
pub(super) fn open(bytes: &[u8]) -> Result<(u16, &[u8]), SnapshotError> {
    open_framed(MAGIC, bytes)
}

/// [`open`] for a frame with another magic (a manifest).
pub(super) fn open_framed<'a>(
    magic: &[u8; 4],
    bytes: &'a [u8],
) -> Result<(u16, &'a [u8]), SnapshotError> {
    let seen = bytes.len().min(magic.len());
    if bytes[..seen] != magic[..seen] {
        return Err(SnapshotError::BadMagic);
    }
    if bytes.len() < HEADER + TRAILER {
        return Err(SnapshotError::Truncated);
    }
    let mut header = Reader(&bytes[magic.len()..HEADER]);
    let version = u16::from_le_bytes(header.array()?);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::UnknownVersion(version));
    }
    let total = u64::from_le_bytes(header.array()?);
    if total > bytes.len() as u64 {
        return Err(SnapshotError::Truncated);
    }
    if total < bytes.len() as u64 {
        return Err(Corrupt("bytes after the checksum"));
    }
    let (content, sum) = bytes.split_at(bytes.len() - TRAILER);
    if u64::from_le_bytes(Reader(sum).array()?) != checksum(content) {
        return Err(SnapshotError::ChecksumMismatch);
    }
    Ok((version, &content[HEADER..]))
}

/// FNV-1a over little-endian 64-bit words rather than bytes (eight times fewer dependent multiplies on snapshots
/// of tens of megabytes), with an xorshift after each multiply so high bits reach the low ones, and a final
/// avalanche (MurmurHash3's fmix64). Every step is a bijection of the running state, so a change confined to one
/// word is always detected.
pub(super) fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    let mut tail = [0; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(PRIME);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

pub(super) fn put_len(out: &mut Vec<u8>, len: usize) {
    put_varint(out, len as u64);
}

pub(super) fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// Ascending ids as the first one and then gaps, which are short where ids cluster (one shop's customers).
#[derive(Default)]
pub(super) struct Gaps(Option<u64>);

impl Gaps {
    pub(super) fn put(&mut self, out: &mut Vec<u8>, id: u64) {
        put_varint(out, id.wrapping_sub(self.0.unwrap_or(0)));
        self.0 = Some(id);
    }

    pub(super) fn get(&mut self, r: &mut Reader<'_>) -> Result<u64, SnapshotError> {
        let gap = r.varint()?;
        let id = match self.0 {
            None => gap,
            Some(_) if gap == 0 => return Err(Corrupt("ids not strictly ascending")),
            Some(prev) => prev.checked_add(gap).ok_or(Corrupt("id overflows"))?,
        };
        self.0 = Some(id);
        Ok(id)
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails instead of panicking.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if n > self.0.len() {
            return Err(Corrupt("a record runs past the end"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        self.take(N)?
            .try_into()
            .map_err(|_| Corrupt("a record runs past the end"))
    }

    pub(super) fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(Corrupt("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Corrupt("varint longer than 10 bytes"))
    }

    pub(super) fn signed(&mut self) -> Result<i64, SnapshotError> {
        let zigzag = self.varint()?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    pub(super) fn u32(&mut self) -> Result<u32, SnapshotError> {
        u32::try_from(self.varint()?).map_err(|_| Corrupt("value out of range"))
    }

    /// A count of items that take at least `min_bytes` each, refused when the bytes left cannot hold them, which
    /// bounds every allocation sized by a count to a small multiple of the input's length.
    pub(super) fn count(&mut self, min_bytes: usize) -> Result<usize, SnapshotError> {
        let count = self.varint()?;
        if count > (self.0.len() / min_bytes) as u64 {
            return Err(Corrupt("a count exceeds the bytes left"));
        }
        Ok(count as usize)
    }

    pub(super) fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let len = self.count(1)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| Corrupt("text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        let mut out = Vec::new();
        let unsigned = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let signed = [0, -1, 1, -64, 64, i64::MIN, i64::MAX];
        unsigned.iter().for_each(|v| put_varint(&mut out, *v));
        signed.iter().for_each(|v| put_signed(&mut out, *v));
        let mut r = Reader(&out);
        for v in unsigned {
            assert_eq!(r.varint(), Ok(v));
        }
        for v in signed {
            assert_eq!(r.signed(), Ok(v));
        }
        assert!(r.0.is_empty());
        assert!(
            Reader(&[0xff; 10]).varint().is_err(),
            "an 11th byte would follow"
        );
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Reader(&too_big).varint().is_err());
    }

    #[test]
    fn gaps_require_strictly_ascending_ids() {
        let mut out = Vec::new();
        let mut gaps = Gaps::default();
        [0, 5, 6, u64::MAX]
            .iter()
            .for_each(|id| gaps.put(&mut out, *id));
        let (mut r, mut gaps) = (Reader(&out), Gaps::default());
        let ids: Vec<u64> = (0..4).map(|_| gaps.get(&mut r).unwrap()).collect();
        assert_eq!(ids, [0, 5, 6, u64::MAX]);
        assert!(
            Gaps(Some(3)).get(&mut Reader(&[0])).is_err(),
            "a repeated id"
        );
        assert!(
            Gaps(Some(u64::MAX)).get(&mut Reader(&[1])).is_err(),
            "past u64"
        );
    }

    #[test]
    fn a_sealed_frame_opens_to_its_contents() {
        let mut out = begin(0);
        out.extend_from_slice(b"contents");
        seal(&mut out);
        assert_eq!(open(&out), Ok((FORMAT_VERSION, &b"contents"[..])));
        assert_eq!(open(&out[..out.len() - 1]), Err(SnapshotError::Truncated));
        assert_eq!(checksum(b""), checksum(b""));
        assert_ne!(
            checksum(&[0; 8]),
            checksum(&[0; 9]),
            "the length is part of the sum"
        );
    }

    #[test]
    fn counts_cannot_exceed_the_bytes_left() {
        assert!(Reader(&[3, 0, 0]).count(1).is_err());
        assert_eq!(Reader(&[2, 0, 0]).count(1), Ok(2));
        assert!(Reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).count(8).is_err());
    }
}
