//! Bringing a partition back after it moved or its owner died (docs/RECOVERY.md): records the old owner may
//! already have acted on are applied *quietly* (state changes, nothing is published), then the versions the old
//! owner did publish are read back from the output topic, and one net change per customer is published where the
//! state at `now` differs from what was last published. That keeps every published `(customer, version)` unique
//! and avoids publishing intermediate moves the live run never made.
//!
//! Pure, like the rest of [`PartitionCore`]: the processor reads the output topic and publishes the outcome.

use std::collections::{BTreeSet, HashMap};

use actix::{Handler, Message, MessageResult};
use functions::{Evaluation, LifecycleStage, Rfm, Timestamp};
use streams::{InputEvent, MerchantId};

use crate::merchant::Effect;
use crate::partition::{Configs, Outcome, PartitionActor, PartitionCore};

/// One `rfm.updated` record as read back from the output topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedVersion {
    pub merchant: MerchantId,
    pub customer_id: u64,
    pub version: u32,
    /// The segment key the customer moved to.
    pub segment: String,
    pub rfm: Rfm,
    pub stage: LifecycleStage,
}

/// What each customer changed by a quiet replay had published before it: `(slot, customer) → (version, evaluation)`.
pub(crate) type QuietBefore = HashMap<(u32, u64), (u32, Evaluation)>;

impl PartitionCore {
    /// Applies events without publishing their changes. Erasures and data requests are still returned: their
    /// effects downstream are idempotent, and dropping one would lose it.
    pub fn apply_quietly(
        &mut self,
        events: &[InputEvent],
        now: Timestamp,
        configs: &Configs,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut effects = Vec::new();
        for event in events {
            let slot = self.slot(event.merchant_id(), configs);
            effects.clear();
            self.merchants[slot as usize].apply(event, now, &mut effects);
            let before = self.quiet.get_or_insert_with(QuietBefore::default);
            effects.retain(|effect| match effect {
                Effect::Changed {
                    customer_id,
                    transition,
                } => {
                    // The first quiet transition of a customer starts from what was last published.
                    before
                        .entry((slot, *customer_id))
                        .or_insert((transition.version - 1, transition.from));
                    false
                }
                _ => true,
            });
            self.collect(slot, &effects, now, event.event_id(), None, &mut outcome);
            self.schedule_touched(slot, now);
        }
        outcome
    }

    /// True while quietly applied changes wait for [`PartitionCore::finish_restore`].
    pub fn is_restoring(&self) -> bool {
        self.quiet.is_some()
    }

    /// Ends a restore: undoes the quiet replay's versions, takes the versions the old owner published (`published`,
    /// any order, older ones ignored), and publishes one change per customer whose evaluation at `now` differs.
    pub fn finish_restore(&mut self, published: &[PublishedVersion], now: Timestamp) -> Outcome {
        let mut pending: BTreeSet<(u32, u64)> = BTreeSet::new();
        for ((slot, customer_id), (version, evaluation)) in self.quiet.take().unwrap_or_default() {
            self.merchants[slot as usize].set_published(customer_id, version, evaluation);
            pending.insert((slot, customer_id));
        }
        for record in published {
            let Some(&slot) = self.slots.get(&record.merchant) else {
                continue;
            };
            let merchant = &mut self.merchants[slot as usize];
            // A segment the current table does not have was published under another configuration; the
            // re-evaluation below publishes the customer's place in this one.
            let Some(segment) = merchant
                .config
                .segments
                .iter()
                .position(|s| s.key == record.segment)
            else {
                pending.insert((slot, record.customer_id));
                continue;
            };
            let newer = merchant
                .customer(record.customer_id)
                .is_some_and(|c| record.version > c.version);
            if newer {
                let evaluation = Evaluation {
                    rfm: record.rfm,
                    segment: segment as u8,
                    stage: record.stage,
                };
                merchant.set_published(record.customer_id, record.version, evaluation);
                pending.insert((slot, record.customer_id));
            }
        }
        self.rescore_all(pending, now, &format!("restore:{}", now.unix()))
    }
}

/// Asks the actor to end its restore with the versions read back from the output topic.
#[derive(Message)]
#[rtype(result = "Outcome")]
pub struct FinishRestore {
    pub published: Vec<PublishedVersion>,
    pub now: Timestamp,
}

impl Handler<FinishRestore> for PartitionActor {
    type Result = MessageResult<FinishRestore>;

    fn handle(&mut self, msg: FinishRestore, _: &mut Self::Context) -> Self::Result {
        let outcome = self.core.finish_restore(&msg.published, msg.now);
        MessageResult(self.encoded(outcome))
    }
}
