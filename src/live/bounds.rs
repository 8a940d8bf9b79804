//! How the live maps stay bounded: the feed's boards and each instance's frame slots hold one entry per merchant,
//! and over months a process sees far more merchants than are active at once. An entry nothing holds on to (no
//! frame waiting to go out, no socket watching) is dropped once it has been idle for a while, and past a cap the
//! longest idle go first. Dropping is cheap to undo: a board is rebuilt from the next batch's counts, and a slot is
//! refilled by the next frame (a socket opening meanwhile starts from Redis's last frame or the live counts). Pure:
//! time is passed in.

/// When an unpinned entry is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveBound {
    /// Idle this long (milliseconds without a change or a frame), an unpinned entry goes.
    pub idle_ms: i64,
    /// At most this many unpinned entries are kept; past it the longest idle go first. Pinned ones do not count:
    /// they are bounded by the sockets an instance accepts and by what one flush has not sent yet.
    pub max_unpinned: usize,
}

impl LiveBound {
    /// Whether `len` entries call for a sweep before the next periodic one: an eighth of the cap over the cap, or
    /// over what the last sweep left (`left`) when that was more. Pinned entries stay, so with more watched
    /// merchants than the cap a sweep leaves more than the cap; measured from the cap alone, every later check would
    /// call for another full scan (one per frame delivered, with 10,000 dashboards open: most of the process's CPU,
    /// docs/PERFORMANCE.md). Measured from what is left, a stream of new merchants still costs one scan per eighth
    /// of the cap.
    pub fn overfull(&self, len: usize, left: usize) -> bool {
        len > self.max_unpinned.max(left) + self.max_unpinned / 8
    }
}

/// What the bound needs to know of one entry.
#[derive(Debug, Clone)]
pub struct Use<K> {
    pub key: K,
    /// A socket watches it, or it holds something not yet sent.
    pub pinned: bool,
    pub last_used_ms: i64,
}

/// The keys to drop at `now_ms`: every unpinned entry idle past the bound, then the longest idle of the rest
/// until `max_unpinned` remain.
pub fn evictions<K>(
    entries: impl IntoIterator<Item = Use<K>>,
    bound: LiveBound,
    now_ms: i64,
) -> Vec<K> {
    let mut drop = Vec::new();
    let mut kept = Vec::new();
    for entry in entries.into_iter().filter(|e| !e.pinned) {
        if now_ms - entry.last_used_ms >= bound.idle_ms {
            drop.push(entry.key);
        } else {
            kept.push(entry);
        }
    }
    if kept.len() > bound.max_unpinned {
        let excess = kept.len() - bound.max_unpinned;
        // Only which entries are the oldest matters, not their order: a selection, not a sort.
        kept.select_nth_unstable_by_key(excess - 1, |e| e.last_used_ms);
        drop.extend(kept.drain(..excess).map(|e| e.key));
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(key: u32, pinned: bool, last_used_ms: i64) -> Use<u32> {
        Use {
            key,
            pinned,
            last_used_ms,
        }
    }

    #[test]
    fn idle_and_oldest_unpinned_entries_go_and_pinned_ones_stay() {
        let bound = LiveBound {
            idle_ms: 1_000,
            max_unpinned: 2,
        };
        let entries = vec![
            used(1, true, 0),
            used(2, false, 0),
            used(3, false, 500),
            used(4, false, 600),
            used(5, false, 700),
            used(6, true, 100),
        ];
        let mut dropped = evictions(entries, bound, 1_050);
        dropped.sort_unstable();
        assert_eq!(dropped, vec![2, 3], "2 is idle, 3 the oldest past the cap");
        assert!(evictions(vec![used(1, false, 10)], bound, 20).is_empty());
        assert!(bound.overfull(3, 0) && !bound.overfull(2, 0));
    }

    #[test]
    fn pinned_entries_past_the_cap_do_not_call_for_a_sweep_on_every_check() {
        let bound = LiveBound {
            idle_ms: 1_000,
            max_unpinned: 800,
        };
        // The last sweep left 5,000 entries, all watched: the next early sweep waits for an eighth of the cap more.
        assert!(!bound.overfull(5_000, 5_000));
        assert!(!bound.overfull(5_100, 5_000));
        assert!(bound.overfull(5_101, 5_000));
        // Nothing left over the cap: the cap is what counts.
        assert!(bound.overfull(901, 100) && !bound.overfull(900, 100));
    }
}
