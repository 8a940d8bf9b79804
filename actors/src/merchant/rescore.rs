//! A new configuration for a merchant: every customer re-scored under it in one pass, the moves returned for the
//! caller to publish (at once, or a chunk at a time: `partition::moves`).

use functions::{Evaluation, RfmConfig, SegmentId, Timestamp, Transition};

use super::{Effect, MerchantState};
use crate::vocab::Move;

impl MerchantState {
    /// Replaces the configuration and re-scores every customer at once. A customer changes when their scores,
    /// stage or segment *key* change: a segment keeps its meaning across tables by its key, not its place, so a
    /// customer whose `champions` became the first rule `platinum` moved, and one whose `loyal` moved from the
    /// second place to the third did not. Transitions keep the old table's index in `from` (the partition renames).
    pub fn reconfigure(&mut self, config: RfmConfig, now: Timestamp, effects: &mut Vec<Effect>) {
        let moves = self.rescore_under(config, now);
        effects.extend(moves.into_iter().map(|m| Effect::Changed {
            customer_id: m.customer_id,
            transition: m.transition,
            order_added: None,
        }));
        self.touched
            .extend(self.customers.iter().map(|(slot, _, _)| slot));
    }

    /// [`MerchantState::reconfigure`] without the effects and timers: the moves in table-slot order, for a caller
    /// that publishes them and schedules the customers' boundaries itself, a chunk at a time.
    pub(crate) fn rescore_under(&mut self, config: RfmConfig, now: Timestamp) -> Vec<Move> {
        self.changed();
        let carried: Vec<Option<SegmentId>> = self
            .config
            .segments
            .iter()
            .map(|old| {
                let at = config.segments.iter().position(|new| new.key == old.key);
                at.and_then(|i| SegmentId::try_from(i).ok())
            })
            .collect();
        self.segment_counts = vec![0; config.segments.len()];
        self.config = config;
        let mut moves = Vec::new();
        for (slot, customer_id, state) in self.customers.iter_mut() {
            let before = state.published;
            let next = functions::evaluate(&state.aggregate, &self.config, now);
            let same = carried
                .get(usize::from(before.segment))
                .copied()
                .flatten()
                .map(|i| Evaluation::new(before.rfm(), i, before.stage));
            state.published = next;
            if same != Some(next) {
                state.version += 1;
                let transition = Transition {
                    version: state.version,
                    from: before,
                    to: next,
                };
                moves.push(Move {
                    slot,
                    customer_id,
                    transition,
                });
            }
            self.segment_counts[usize::from(next.segment)] += 1;
        }
        moves
    }

    /// One past the highest slot a customer holds in this merchant's table.
    pub(crate) fn slot_bound(&self) -> u32 {
        self.customers
            .iter()
            .map(|(slot, _, _)| slot + 1)
            .max()
            .unwrap_or(0)
    }
}
