//! Decoding a snapshot into a partition. Since format 4 every merchant is a piece of known length and checksum, so
//! the pieces decode independently: on `threads` scoped threads at once, the largest first, each with its own
//! scratch buffers. A restart of an instance holding millions of customers is mostly this decode, and on a restart
//! no partition is live yet, so the caller may give it every core. Whatever the thread count, the result is the
//! same partition: merchants keep the snapshot's order (their slots), the first damaged piece in that order is the
//! error, and the timer queue is built once from every customer's next boundary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use functions::{evaluate, next_change, Timestamp};

use super::front::MerchantEntry;
use super::{
    config_fingerprint, read_merchant, read_piece, starting_config, Corrupt, Front, PieceMark,
    Reader, Scratch, SnapshotError, SnapshotOffsets, CONFIG_IN_PIECE,
};
use crate::merchant::MerchantState;
use crate::partition::{Configs, PartitionCore};

/// A merchant's piece still to decode, at its slot.
struct Job<'a> {
    slot: usize,
    merchant: MerchantState,
    fingerprint: u64,
    mark: PieceMark,
    bytes: &'a [u8],
}

/// A decoded merchant, the mark of the piece it came from, and its customers' timers, `(due, customer slot)`.
type Decoded = (MerchantState, Option<PieceMark>, Vec<(Timestamp, u32)>);

impl PartitionCore {
    /// Rebuilds a partition from [`PartitionCore::encode_snapshot`]'s bytes. Configurations are taken from
    /// `configs` or the default, as for a merchant seen the first time; every customer gets a timer for its next
    /// boundary after `now`, or at `now` when a boundary passed while nobody owned the partition, so the first
    /// tick publishes the move the live run would have published.
    pub fn decode_snapshot(
        partition: i32,
        bytes: &[u8],
        configs: &Configs,
        now: Timestamp,
    ) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
        PartitionCore::decode_snapshot_on(partition, bytes, configs, now, 1)
    }

    /// [`PartitionCore::decode_snapshot`] with the merchants' pieces spread over up to `threads` threads.
    pub fn decode_snapshot_on(
        partition: i32,
        bytes: &[u8],
        configs: &Configs,
        now: Timestamp,
        threads: usize,
    ) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
        decode(partition, bytes, configs, now, Some(threads))
    }
}

/// The decoder as one reader walking the bytes, merchant after merchant (how every snapshot was decoded before
/// pieces were spread over threads): what the tests hold the spread decode to.
#[cfg(test)]
pub(super) fn decode_in_one_pass(
    partition: i32,
    bytes: &[u8],
    configs: &Configs,
    now: Timestamp,
) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
    decode(partition, bytes, configs, now, None)
}

/// Spreads the pieces over `threads` when given and every merchant has a piece; else one pass.
fn decode(
    partition: i32,
    bytes: &[u8],
    configs: &Configs,
    now: Timestamp,
    threads: Option<usize>,
) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
    let (version, content) = super::wire::open(bytes)?;
    let front = Front::read(version, content)?;
    if front.partition != partition {
        return Err(SnapshotError::WrongPartition {
            expected: partition,
            found: front.partition,
        });
    }
    let Front {
        version,
        offsets,
        merchants,
        mut rest,
        ..
    } = front;
    let spread = threads.filter(|_| merchants.iter().all(|entry| entry.piece.is_some()));
    let decoded = match spread {
        Some(threads) => {
            // As one reader would: the first bad merchant in slot order is the error, whether its piece does
            // not decode or the front's lengths run out before it.
            let (jobs, cut) = split(version, merchants, configs, &mut rest);
            let decoded = decode_all(jobs, threads, version, now)?;
            if let Some(error) = cut {
                return Err(error);
            }
            decoded
        }
        None => decode_inline(version, merchants, configs, &mut rest, now)?,
    };
    if !rest.0.is_empty() {
        return Err(Corrupt("bytes after the last merchant"));
    }
    Ok((assemble(partition, version, decoded), offsets))
}

/// Each merchant's piece as its own slice, with the merchant it will fill, up to the first merchant whose piece
/// or configuration cannot be had (the error beside).
fn split<'a>(
    version: u16,
    entries: Vec<MerchantEntry>,
    configs: &Configs,
    rest: &mut Reader<'a>,
) -> (Vec<Job<'a>>, Option<SnapshotError>) {
    let mut jobs = Vec::with_capacity(entries.len());
    for (slot, entry) in entries.into_iter().enumerate() {
        match job(slot, version, entry, configs, rest) {
            Ok(job) => jobs.push(job),
            Err(error) => return (jobs, Some(error)),
        }
    }
    (jobs, None)
}

fn job<'a>(
    slot: usize,
    version: u16,
    entry: MerchantEntry,
    configs: &Configs,
    rest: &mut Reader<'a>,
) -> Result<Job<'a>, SnapshotError> {
    let mark = entry.piece.ok_or(Corrupt("a merchant without a piece"))?;
    let merchant = unfilled(version, &entry, configs)?;
    let bytes = rest.take(mark.len)?;
    Ok(Job {
        slot,
        merchant,
        fingerprint: entry.fingerprint,
        mark,
        bytes,
    })
}

/// Decodes every job, the largest first so the threads finish close together; results in slot order. Once a
/// piece fails, pieces after it in slot order are skipped: the error is the first bad one's either way.
fn decode_all(
    mut jobs: Vec<Job<'_>>,
    threads: usize,
    version: u16,
    now: Timestamp,
) -> Result<Vec<Decoded>, SnapshotError> {
    let count = jobs.len();
    jobs.sort_by_key(|job| std::cmp::Reverse(job.mark.len));
    let queue = Mutex::new(jobs.into_iter());
    let failed = AtomicUsize::new(usize::MAX);
    let work = || {
        let mut scratch = Scratch::for_version(version);
        let mut done = Vec::new();
        // The lock is held only to take the next job; a poisoned lock means another worker panicked, which the
        // scope below turns into a panic here anyway.
        while let Some(job) = queue.lock().ok().and_then(|mut jobs| jobs.next()) {
            if job.slot > failed.load(Ordering::Relaxed) {
                continue;
            }
            let slot = job.slot;
            let decoded = decode_one(job, now, &mut scratch);
            if decoded.is_err() {
                failed.fetch_min(slot, Ordering::Relaxed);
            }
            done.push((slot, decoded));
        }
        done
    };
    let threads = threads.clamp(1, count.max(1));
    let mut results: Vec<(usize, Result<Decoded, SnapshotError>)> = std::thread::scope(|s| {
        // A thread the system will not give is work this one does itself.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut all = work();
        for helper in helpers {
            // A panic in decoding is a bug, not bad input: every length and value is checked before use.
            all.extend(helper.join().expect("snapshot decode thread panicked"));
        }
        all
    });
    results.sort_unstable_by_key(|(slot, _)| *slot);
    let mut decoded = Vec::with_capacity(count);
    for (_, result) in results {
        decoded.push(result?);
    }
    Ok(decoded)
}

fn decode_one(
    job: Job<'_>,
    now: Timestamp,
    scratch: &mut Scratch,
) -> Result<Decoded, SnapshotError> {
    let Job {
        mut merchant,
        fingerprint,
        mark,
        bytes,
        ..
    } = job;
    read_piece(&mut Reader(bytes), mark, &mut merchant, scratch)?;
    filled(merchant, fingerprint, Some(mark), now)
}

/// A merchant as its entry in the front starts it, before its customers are read.
fn unfilled(
    version: u16,
    entry: &MerchantEntry,
    configs: &Configs,
) -> Result<MerchantState, SnapshotError> {
    let config = starting_config(version, entry, configs)?;
    let mut merchant = MerchantState::new(entry.id.clone(), config);
    merchant.exponent = entry.exponent;
    Ok(merchant)
}

/// A merchant whose customers are read: checked against its entry's fingerprint, with its timers.
fn filled(
    merchant: MerchantState,
    fingerprint: u64,
    mark: Option<PieceMark>,
    now: Timestamp,
) -> Result<Decoded, SnapshotError> {
    if config_fingerprint(&merchant.config) != fingerprint {
        return Err(Corrupt(
            "a merchant's configuration does not match its fingerprint",
        ));
    }
    let timers = timers_of(&merchant, now).collect();
    Ok((merchant, mark, timers))
}

/// The partition from its decoded merchants, in slot order.
fn assemble(partition: i32, version: u16, decoded: Vec<Decoded>) -> PartitionCore {
    let mut core = PartitionCore::new(partition);
    let mut timers = Vec::with_capacity(decoded.iter().map(|(_, _, t)| t.len()).sum());
    for (slot, (merchant, mark, due)) in decoded.into_iter().enumerate() {
        // What the store holds of this merchant is this piece: the next round need not send it. A piece of an
        // older layout is sent again, so a manifest never lists pieces of two layouts.
        if let Some(mark) = mark.filter(|_| version >= CONFIG_IN_PIECE) {
            core.pieces.set(slot, mark);
        }
        timers.extend(
            due.into_iter()
                .map(|(at, customer)| (at, slot as u32, customer)),
        );
        core.slots.insert(merchant.id.clone(), slot as u32);
        core.merchants.push(merchant);
    }
    core.timers.rebuild(timers);
    core
}

/// Before format 4 a merchant's customers follow the front with no length: only one reader can walk them.
fn decode_inline(
    version: u16,
    entries: Vec<MerchantEntry>,
    configs: &Configs,
    rest: &mut Reader<'_>,
    now: Timestamp,
) -> Result<Vec<Decoded>, SnapshotError> {
    let mut scratch = Scratch::for_version(version);
    let mut decoded = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut merchant = unfilled(version, &entry, configs)?;
        match entry.piece {
            Some(mark) => read_piece(rest, mark, &mut merchant, &mut scratch)?,
            None => read_merchant(rest, &mut merchant, &mut scratch)?,
        }
        decoded.push(filled(merchant, entry.fingerprint, entry.piece, now)?);
    }
    Ok(decoded)
}

/// Each customer's next boundary after `now`, or `now` when its published evaluation is already out of date.
fn timers_of(
    merchant: &MerchantState,
    now: Timestamp,
) -> impl Iterator<Item = (Timestamp, u32)> + '_ {
    merchant
        .customers
        .iter()
        .filter_map(move |(customer, _, state)| {
            let due = if evaluate(&state.aggregate, &merchant.config, now) != state.published {
                Some(now)
            } else {
                next_change(&state.aggregate, &merchant.config, now)
            };
            due.map(|at| (at, customer))
        })
}
