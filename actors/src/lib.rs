//! The stateful core of the engine, as actix actors: one actor per assigned Kafka partition owns the merchants on
//! it, each merchant keeps its customers' compact state, and a timer queue per partition fires recency boundaries.
//!
//! Merchants are state machines inside their partition's actor rather than actors of their own: a partition is
//! consumed in order by one actor anyway, so a mailbox and a message hop per merchant would add cost and no
//! concurrency. Per-customer actors (`customer`) exist only while a customer has something that needs one, a watcher
//! of its nudges; fired nudges wait for them as compact rows on the `nudges` desk. See DESIGN.md §2 and
//! docs/DECISIONS.md.

pub mod census;
pub mod clock;
pub mod customer;
pub mod customer_table;
pub mod experiments;
pub mod held;
mod ledger;
pub mod merchant;
pub mod nudges;
pub mod order_index;
pub mod outputs;
pub mod partition;
pub mod preview;
pub mod snapshot;
pub mod timers;
pub mod vocab;

pub use clock::{Clock, ManualClock, SystemClock};
pub use experiments::{ExperimentPlan, NudgeArm, NudgePlans};
pub use held::{DataRequest, HeldCustomer};
pub use partition::restore::{FinishRestore, NextRestoreChunk, PublishedVersion, RESTORE_CHUNK};
pub use partition::MOVES_CHUNK;
pub use partition::{
    ApplyBatch, Change, Configs, Inspect, LiveCounts, Outcome, PartitionActor, PartitionCore,
    RawRecord, Reconfigure, Tick,
};
pub use snapshot::{
    assemble, Incarnation, RecordStamp, Restain, RoundAnswer, SnapshotError, SnapshotOffsets,
    SnapshotRound, SnapshotSummary, TakeSnapshotRound,
};
