//! The life of one assigned partition, as an I/O-free state machine: the consumer loop feeds it what happened
//! (a snapshot loaded, the quiet replay reached the frontier, the read-back finished, a chunk went out, the group
//! took the partition back, a tick) and carries out the commands it answers with. Every rule about what may happen
//! to a partition next lives here, where it can be tested without a broker.
//!
//! ```text
//!   assigned ──► Hydrating ──loaded──► Replaying ──frontier──► ReadingBack ──read──► Publishing ──last chunk──► Live
//!                  ▲   │ postponed         ▲                        │ failed
//!                  └───┘ (next tick)        └────────────────────────┘ (next progress)
//!   revoked (any phase) ──► handed over: a snapshot only of a Live partition, none at all when the assignment was lost
//! ```
//!
//! Background work (a hydration, a read-back, a restore chunk) is tagged with the attempt that started it; a result
//! whose attempt is not the current one belongs to an earlier life of the partition (revoked and assigned again
//! meanwhile) and is ignored.

/// Where one partition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Its snapshot is loading in the background while the partition is paused; `None` between a postponed
    /// attempt (store or broker unavailable) and the next tick.
    Hydrating { attempt: Option<u64> },
    /// Installed from its snapshot; records up to the input high watermarks seen at loading are applied quietly.
    Replaying,
    /// The quiet replay reached the frontier; what the previous owner published is being read back.
    ReadingBack { attempt: u64 },
    /// The restore's net changes go out in chunks. Records are published live, but the partition is not
    /// snapshotted yet (a snapshot would hold customers whose change was never published).
    Publishing { attempt: u64, changes: usize },
    /// Restored: records are published as they come, recency boundaries tick, snapshots are taken.
    Live,
}

/// What happened to the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// The hydration of `attempt` ended: `loaded` when the partition was installed, not when it was postponed.
    Hydrated { attempt: u64, loaded: bool },
    /// Records were applied (or a tick passed) while replaying; `reached` when the position is at the frontier.
    Progress { reached: bool },
    /// The read-back of `attempt` ended: `read` when the previous owner's versions were taken over.
    ReadBack { attempt: u64, read: bool },
    /// A chunk of the restore of `attempt` went out with `changes` changes; `last` when there are no more.
    Chunk {
        attempt: u64,
        changes: usize,
        last: bool,
    },
    /// The loop ticked.
    Tick,
}

/// What the loop must do for the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// Stop fetching the partition.
    Pause,
    /// Load its snapshot in the background, tagged with `attempt`.
    Hydrate { attempt: u64 },
    /// Read back the output topic in the background, tagged with `attempt`.
    ReadBack { attempt: u64 },
    /// Hand the read-back versions to the actor and publish its first chunk of net changes.
    FinishRestore { attempt: u64 },
    /// Ask the actor for the next chunk of the restore of `attempt`.
    NextChunk { attempt: u64 },
}

/// How the partition leaves this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Departure {
    /// Snapshot it first, so its next owner starts from its exact state.
    HandOver,
    /// Give it up as it is: not restored yet (its next owner restores it from the last snapshot), or lost to
    /// the group (another member may own it already, so nothing may be written for it).
    Abandon,
}

/// Numbers background work, so results of an earlier life of a partition are recognised. Shared by every
/// partition of the processor.
#[derive(Debug, Default)]
pub(super) struct Attempts(u64);

impl Attempts {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

#[derive(Debug)]
pub(super) struct Lifecycle {
    phase: Phase,
}

impl Lifecycle {
    /// A partition the group just gave this member: paused while its snapshot loads.
    pub(super) fn assigned(attempts: &mut Attempts) -> (Lifecycle, Vec<Command>) {
        let attempt = attempts.next();
        let lifecycle = Lifecycle {
            phase: Phase::Hydrating {
                attempt: Some(attempt),
            },
        };
        (
            lifecycle,
            vec![Command::Pause, Command::Hydrate { attempt }],
        )
    }

    pub(super) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Installed: its records are applied (quietly while replaying or reading back).
    pub(super) fn installed(&self) -> bool {
        !matches!(self.phase, Phase::Hydrating { .. })
    }

    /// Records are applied without publishing (the restore publishes their net effect at its end).
    pub(super) fn quiet(&self) -> bool {
        matches!(self.phase, Phase::Replaying | Phase::ReadingBack { .. })
    }

    /// Replaying towards the frontier, which the loop reports with [`Event::Progress`].
    pub(super) fn replaying(&self) -> bool {
        self.phase == Phase::Replaying
    }

    /// Restored and every net change of the restore published: ticked and snapshotted.
    pub(super) fn live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// Publishing the chunks of the restore of `attempt` (a chunk of another attempt is stale).
    pub(super) fn publishes(&self, attempt: u64) -> bool {
        matches!(self.phase, Phase::Publishing { attempt: a, .. } if a == attempt)
    }

    /// Takes in `event` and answers what the loop must do.
    pub(super) fn on(&mut self, event: Event, attempts: &mut Attempts) -> Vec<Command> {
        use Phase::*;
        match (&mut self.phase, event) {
            (Hydrating { attempt: Some(a) }, Event::Hydrated { attempt, loaded })
                if *a == attempt =>
            {
                self.phase = if loaded {
                    Replaying
                } else {
                    Hydrating { attempt: None }
                };
                Vec::new()
            }
            (Hydrating { attempt: None }, Event::Tick) => {
                let attempt = attempts.next();
                self.phase = Hydrating {
                    attempt: Some(attempt),
                };
                vec![Command::Hydrate { attempt }]
            }
            (Replaying, Event::Progress { reached: true }) => {
                let attempt = attempts.next();
                self.phase = ReadingBack { attempt };
                vec![Command::ReadBack { attempt }]
            }
            (ReadingBack { attempt: a }, Event::ReadBack { attempt, read }) if *a == attempt => {
                if read {
                    self.phase = Publishing {
                        attempt,
                        changes: 0,
                    };
                    vec![Command::FinishRestore { attempt }]
                } else {
                    // Tried again once the loop next reports progress (every tick at the latest).
                    self.phase = Replaying;
                    Vec::new()
                }
            }
            (
                Publishing {
                    attempt: a,
                    changes: total,
                },
                Event::Chunk {
                    attempt,
                    changes,
                    last,
                },
            ) if *a == attempt => {
                *total += changes;
                if last {
                    tracing::info!(changes = *total, "restore finished");
                    self.phase = Live;
                    Vec::new()
                } else {
                    vec![Command::NextChunk { attempt }]
                }
            }
            // Anything else is a stale result of an earlier attempt, or news that changes nothing now.
            _ => Vec::new(),
        }
    }

    /// The group takes the partition back; `lost` when it did so without waiting for this member.
    pub(super) fn revoked(&self, lost: bool) -> Departure {
        if self.live() && !lost {
            Departure::HandOver
        } else {
            Departure::Abandon
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hydrated(attempts: &mut Attempts) -> (Lifecycle, u64) {
        let (mut lifecycle, commands) = Lifecycle::assigned(attempts);
        let Some(Command::Hydrate { attempt }) = commands.last().cloned() else {
            panic!("an assignment starts a hydration: {commands:?}");
        };
        assert_eq!(commands[0], Command::Pause, "paused while it loads");
        let none = lifecycle.on(
            Event::Hydrated {
                attempt,
                loaded: true,
            },
            attempts,
        );
        assert!(none.is_empty());
        (lifecycle, attempt)
    }

    /// Drives a partition from assignment to `Live`, returning the read-back's attempt.
    fn live(attempts: &mut Attempts) -> (Lifecycle, u64) {
        let (mut lifecycle, _) = hydrated(attempts);
        let Some(Command::ReadBack { attempt }) = lifecycle
            .on(Event::Progress { reached: true }, attempts)
            .pop()
        else {
            panic!("reaching the frontier starts the read-back");
        };
        let commands = lifecycle.on(
            Event::ReadBack {
                attempt,
                read: true,
            },
            attempts,
        );
        assert_eq!(commands, vec![Command::FinishRestore { attempt }]);
        let last = Event::Chunk {
            attempt,
            changes: 3,
            last: true,
        };
        assert!(lifecycle.on(last, attempts).is_empty());
        (lifecycle, attempt)
    }

    #[test]
    fn a_partition_goes_from_assignment_to_live_through_every_phase() {
        let mut attempts = Attempts::default();
        let (mut lifecycle, _) = hydrated(&mut attempts);
        assert_eq!(lifecycle.phase(), &Phase::Replaying);
        assert!(lifecycle.installed() && lifecycle.quiet() && !lifecycle.live());
        assert!(lifecycle
            .on(Event::Progress { reached: false }, &mut attempts)
            .is_empty());
        assert_eq!(
            lifecycle.phase(),
            &Phase::Replaying,
            "not at the frontier yet"
        );
        let commands = lifecycle.on(Event::Progress { reached: true }, &mut attempts);
        let [Command::ReadBack { attempt }] = commands[..] else {
            panic!("{commands:?}");
        };
        assert!(lifecycle.quiet(), "still quiet while reading back");
        lifecycle.on(
            Event::ReadBack {
                attempt,
                read: true,
            },
            &mut attempts,
        );
        assert!(
            !lifecycle.quiet() && !lifecycle.live(),
            "publishing: live records, no snapshot"
        );
        assert!(lifecycle.publishes(attempt));
        let chunk = |last| Event::Chunk {
            attempt,
            changes: 2,
            last,
        };
        assert_eq!(
            lifecycle.on(chunk(false), &mut attempts),
            vec![Command::NextChunk { attempt }]
        );
        assert_eq!(
            lifecycle.phase(),
            &Phase::Publishing {
                attempt,
                changes: 2
            }
        );
        assert!(lifecycle.on(chunk(true), &mut attempts).is_empty());
        assert!(lifecycle.live());
    }

    #[test]
    fn a_postponed_hydration_is_tried_again_on_the_next_tick_with_a_new_attempt() {
        let mut attempts = Attempts::default();
        let (mut lifecycle, commands) = Lifecycle::assigned(&mut attempts);
        let Some(Command::Hydrate { attempt: first }) = commands.last().cloned() else {
            panic!("{commands:?}");
        };
        lifecycle.on(
            Event::Hydrated {
                attempt: first,
                loaded: false,
            },
            &mut attempts,
        );
        assert!(!lifecycle.installed());
        let commands = lifecycle.on(Event::Tick, &mut attempts);
        let [Command::Hydrate { attempt: second }] = commands[..] else {
            panic!("{commands:?}");
        };
        assert_ne!(first, second);
        // A late answer of the first attempt changes nothing; the second's installs.
        lifecycle.on(
            Event::Hydrated {
                attempt: first,
                loaded: true,
            },
            &mut attempts,
        );
        assert!(!lifecycle.installed(), "stale attempt ignored");
        lifecycle.on(
            Event::Hydrated {
                attempt: second,
                loaded: true,
            },
            &mut attempts,
        );
        assert!(lifecycle.installed());
        assert!(
            lifecycle.on(Event::Tick, &mut attempts).is_empty(),
            "ticks do nothing once installed"
        );
    }

    #[test]
    fn results_of_an_earlier_life_of_the_partition_are_ignored() {
        let mut attempts = Attempts::default();
        // The first life reaches the read-back, then the partition is revoked and assigned again.
        let (mut old, _) = hydrated(&mut attempts);
        let Some(Command::ReadBack { attempt: old_read }) = old
            .on(Event::Progress { reached: true }, &mut attempts)
            .pop()
        else {
            panic!("read-back");
        };
        assert_eq!(
            old.revoked(false),
            Departure::Abandon,
            "not restored: no snapshot"
        );
        let (mut new, _) = hydrated(&mut attempts);
        let stale = Event::ReadBack {
            attempt: old_read,
            read: true,
        };
        assert!(new.on(stale, &mut attempts).is_empty());
        assert_eq!(new.phase(), &Phase::Replaying);
        let stale_chunk = Event::Chunk {
            attempt: old_read,
            changes: 1,
            last: true,
        };
        assert!(new.on(stale_chunk, &mut attempts).is_empty());
        assert!(
            !new.live(),
            "a stale last chunk does not settle the new restore"
        );
        assert!(!new.publishes(old_read));
    }

    #[test]
    fn a_failed_read_back_returns_to_replaying_and_starts_again_on_progress() {
        let mut attempts = Attempts::default();
        let (mut lifecycle, _) = hydrated(&mut attempts);
        let Some(Command::ReadBack { attempt }) = lifecycle
            .on(Event::Progress { reached: true }, &mut attempts)
            .pop()
        else {
            panic!("read-back");
        };
        lifecycle.on(
            Event::ReadBack {
                attempt,
                read: false,
            },
            &mut attempts,
        );
        assert_eq!(lifecycle.phase(), &Phase::Replaying);
        let commands = lifecycle.on(Event::Progress { reached: true }, &mut attempts);
        assert!(matches!(commands[..], [Command::ReadBack { attempt: a }] if a != attempt));
    }

    #[test]
    fn only_a_live_partition_that_was_not_lost_is_handed_over_with_a_snapshot() {
        let mut attempts = Attempts::default();
        let (live, _) = live(&mut attempts);
        assert_eq!(live.revoked(false), Departure::HandOver);
        assert_eq!(
            live.revoked(true),
            Departure::Abandon,
            "fenced: lost to the group"
        );
        let (hydrating, _) = Lifecycle::assigned(&mut attempts);
        assert_eq!(hydrating.revoked(false), Departure::Abandon);
        let (mut publishing, _) = hydrated(&mut attempts);
        let Some(Command::ReadBack { attempt }) = publishing
            .on(Event::Progress { reached: true }, &mut attempts)
            .pop()
        else {
            panic!("read-back");
        };
        publishing.on(
            Event::ReadBack {
                attempt,
                read: true,
            },
            &mut attempts,
        );
        assert_eq!(
            publishing.revoked(false),
            Departure::Abandon,
            "revoked mid-restore: the next owner restores from the last snapshot"
        );
    }

    #[test]
    fn progress_outside_replaying_and_ticks_outside_hydrating_change_nothing() {
        let mut attempts = Attempts::default();
        let (mut lifecycle, _) = live(&mut attempts);
        for event in [
            Event::Progress { reached: true },
            Event::Tick,
            Event::Hydrated {
                attempt: 1,
                loaded: true,
            },
        ] {
            assert!(lifecycle.on(event, &mut attempts).is_empty());
            assert!(lifecycle.live());
        }
    }
}
