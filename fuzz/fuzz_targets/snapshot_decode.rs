//! The partition snapshot decoder (`PartitionCore::decode_snapshot`, and `SnapshotSummary::read`, which reads the
//! front only) on untrusted bytes: it must refuse bad input with a `SnapshotError`, never panic. A snapshot it
//! accepts must be stable: re-encoding the decoded partition gives a snapshot that decodes and re-encodes to the
//! same bytes.
//!
//! Almost every mutation of a real snapshot breaks its checksum, which would keep the fuzzer at the frame. So the
//! input has two modes, by the low bit of byte 0:
//! - clear: the rest is the snapshot, as stored;
//! - set: the rest is the content after the header, which the target frames (magic, a format version from 1 to the
//!   encoder's own picked by the bits above, total length, checksum) so the parser behind the checksum gets the
//!   mutations.
//!
//! The frame and checksum are written here from the layout documented in actors/src/snapshot/wire.rs (private to
//! that crate). On the first input the target checks them against a real snapshot and stops if they drifted.

#![no_main]

use std::sync::OnceLock;

use actors::{Configs, PartitionCore, SnapshotOffsets, SnapshotSummary};
use functions::Timestamp;
use libfuzzer_sys::fuzz_target;

/// The partition the seed snapshots were taken of (see `examples/write_seeds.rs`).
const PARTITION: i32 = 7;
const NOW: Timestamp = Timestamp(1_780_000_000);
const MAGIC: &[u8; 4] = b"LNRS";
const HEADER: usize = 14;
const TRAILER: usize = 8;

/// FNV-1a over little-endian 64-bit words with an xorshift per word, the length folded into the seed, and fmix64
/// at the end: the snapshot's checksum, as its module documents it.
fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        h = (h ^ u64::from_le_bytes(word.try_into().expect("eight bytes"))).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(PRIME);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A valid frame around `content` (everything between the header and the checksum).
fn frame(version: u16, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + content.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&((HEADER + content.len() + TRAILER) as u64).to_le_bytes());
    out.extend_from_slice(content);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(PartitionCore, SnapshotOffsets)> {
    PartitionCore::decode_snapshot(PARTITION, bytes, &Configs::default(), NOW).ok()
}

/// Once: the frame written here must match the encoder's, or the framed mode would only ever test the checksum.
/// Returns the format version the encoder writes (the newest this build reads).
fn check_frame_matches_encoder() -> u16 {
    static VERSION: OnceLock<u16> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let real = PartitionCore::new(PARTITION).encode_snapshot(&SnapshotOffsets::default());
        let version = u16::from_le_bytes([real[4], real[5]]);
        let content = &real[HEADER..real.len() - TRAILER];
        assert_eq!(
            frame(version, content),
            real,
            "the fuzz target's snapshot frame no longer matches actors/src/snapshot/wire.rs: update `frame`/`checksum`"
        );
        assert!(decode(&real).is_some(), "an empty partition's snapshot does not decode");
        version
    })
}

fuzz_target!(|data: &[u8]| {
    let newest = check_frame_matches_encoder();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let bytes = if mode & 1 == 0 {
        rest
    } else {
        framed = frame(1 + u16::from(mode >> 1) % newest, rest);
        &framed
    };
    let _ = SnapshotSummary::read(bytes);
    let Some((core, offsets)) = decode(bytes) else {
        return;
    };
    let once = core.encode_snapshot(&offsets);
    let (again, offsets_again) = decode(&once).expect("a re-encoded snapshot does not decode");
    assert_eq!(
        offsets_again, offsets,
        "offsets changed through re-encoding"
    );
    assert!(
        again.encode_snapshot(&offsets_again) == once,
        "a decoded snapshot re-encodes to different bytes the second time"
    );
});
