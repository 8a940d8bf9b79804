//! What kind of nudge a segment change calls for. A merchant writes one template per kind (DESIGN.md §5), and an
//! A/B test varies one kind's template, so the kind is decided once, where the change is made, and travels with the
//! nudge (`rfm.task`, the widget, the results).
//!
//! The kinds follow the default segments (`champions`, `loyal`, `new`, `inactive`, `at_risk`), plus two that read
//! the direction of the move: `churned` when the customer's lifecycle stage is churned, and `tier_dropped` when a
//! customer leaves one of the two top segments for anything but the other top segment or a risk segment (those
//! have their own kinds). A first-time buyer moving into a segment without a kind of its own (a large first order
//! lands in `other`, not `new`, under the default table) gets the `new` welcome. Any other move into such a segment
//! from below calls for no nudge.
//!
//! The submodules hold what a kind's nudge says: a merchant's template and its rules (`template`, `text`,
//! `locale`), the defaults a new merchant starts with, and the rendering for one customer; and how a kind's nudge
//! is tried out and measured: A/B experiments with a holdout (`experiment`), the frequency cap (`cap`), which nudge
//! an order is credited to (`attribution`), and the results' statistics (`stats`).

pub mod attribution;
pub mod cap;
pub mod defaults;
pub mod experiment;
pub use crate::locale;
pub mod render;
pub mod stats;
pub mod template;
pub mod text;

pub use defaults::default_template;
pub use locale::{fallback_chain, Locale};
pub use render::{render, Rendered, Vars};
pub use template::{parse_update, Template, Text};

use crate::LifecycleStage;

/// One transition type a template is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NudgeKind {
    AtRisk,
    Loyal,
    New,
    Inactive,
    Champions,
    TierDropped,
    Churned,
}

impl NudgeKind {
    pub const ALL: [NudgeKind; 7] = [
        NudgeKind::AtRisk,
        NudgeKind::Loyal,
        NudgeKind::New,
        NudgeKind::Inactive,
        NudgeKind::Champions,
        NudgeKind::TierDropped,
        NudgeKind::Churned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NudgeKind::AtRisk => "at_risk",
            NudgeKind::Loyal => "loyal",
            NudgeKind::New => "new",
            NudgeKind::Inactive => "inactive",
            NudgeKind::Champions => "champions",
            NudgeKind::TierDropped => "tier_dropped",
            NudgeKind::Churned => "churned",
        }
    }

    pub fn parse(raw: &str) -> Option<NudgeKind> {
        NudgeKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The kind of nudge a move from `from` to `to` (segment keys) calls for, with the customer's stage after it;
    /// `None` when the segment did not change or the move calls for none.
    pub fn of_move(from: &str, to: &str, stage: LifecycleStage) -> Option<NudgeKind> {
        if from == to {
            return None;
        }
        if stage == LifecycleStage::Churned {
            return Some(NudgeKind::Churned);
        }
        let top = |key: &str| key == "champions" || key == "loyal";
        match to {
            "champions" => Some(NudgeKind::Champions),
            "loyal" if from == "champions" => Some(NudgeKind::TierDropped),
            "loyal" => Some(NudgeKind::Loyal),
            "new" => Some(NudgeKind::New),
            "at_risk" => Some(NudgeKind::AtRisk),
            "inactive" => Some(NudgeKind::Inactive),
            _ if top(from) => Some(NudgeKind::TierDropped),
            _ if stage == LifecycleStage::OneTimeBuyer => Some(NudgeKind::New),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleStage::{Churned, RepeatBuyer};

    #[test]
    fn names_round_trip() {
        for kind in NudgeKind::ALL {
            assert_eq!(NudgeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NudgeKind::parse("AtRisk"), None);
    }

    #[test]
    fn moves_map_to_kinds() {
        let of = |from, to| NudgeKind::of_move(from, to, RepeatBuyer);
        assert_eq!(of("loyal", "loyal"), None);
        assert_eq!(of("loyal", "champions"), Some(NudgeKind::Champions));
        assert_eq!(of("champions", "loyal"), Some(NudgeKind::TierDropped));
        assert_eq!(of("new", "loyal"), Some(NudgeKind::Loyal));
        assert_eq!(of("loyal", "at_risk"), Some(NudgeKind::AtRisk));
        assert_eq!(of("at_risk", "inactive"), Some(NudgeKind::Inactive));
        assert_eq!(of("champions", "other"), Some(NudgeKind::TierDropped));
        assert_eq!(of("new", "other"), None);
        assert_eq!(
            NudgeKind::of_move("inactive", "other", LifecycleStage::OneTimeBuyer),
            Some(NudgeKind::New),
            "a first order too large for `new` is still welcomed"
        );
        assert_eq!(
            NudgeKind::of_move("at_risk", "inactive", Churned),
            Some(NudgeKind::Churned)
        );
        assert_eq!(NudgeKind::of_move("x", "x", Churned), None);
    }
}
