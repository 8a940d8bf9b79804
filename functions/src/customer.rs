//! A customer as the engine keeps it: the aggregate, the last published evaluation and its version.
//!
//! The version rises by one each time the published evaluation changes; downstream writes carry it, which is what
//! makes a replayed change recognisable (a row or record for version N already exists).

use serde::{Deserialize, Serialize};

use crate::aggregate::{CustomerAggregate, Fact};
use crate::config::RfmConfig;
use crate::lifecycle::{lifecycle_stage, LifecycleStage};
use crate::score::{score, Rfm};
use crate::segment::{classify, SegmentId};
use crate::time::Timestamp;

/// What is published about a customer: scores, segment, stage. Five bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Evaluation {
    pub rfm: Rfm,
    pub segment: SegmentId,
    pub stage: LifecycleStage,
}

impl Evaluation {
    /// A customer nobody has scored yet: R1 F1 M1 in the segment that triple maps to.
    pub fn initial(config: &RfmConfig) -> Self {
        let rfm = Rfm::new(1, 1, 1);
        Evaluation {
            rfm,
            segment: classify(&config.segments, rfm).unwrap_or(0),
            stage: LifecycleStage::NewLead,
        }
    }
}

/// Evaluates an aggregate at `now`. Pure; the single place scores, segment and stage are derived.
pub fn evaluate(aggregate: &CustomerAggregate, config: &RfmConfig, now: Timestamp) -> Evaluation {
    let rfm = score(aggregate, config, now);
    // A validated table is total; fall back to the last rule rather than panic on one that is not.
    let segment = classify(&config.segments, rfm)
        .unwrap_or_else(|| config.segments.len().saturating_sub(1) as u8);
    let vip = config
        .segments
        .get(usize::from(segment))
        .is_some_and(|r| r.vip);
    let stage = lifecycle_stage(&aggregate.totals(), vip, config, now);
    Evaluation {
        rfm,
        segment,
        stage,
    }
}

/// A published change: the customer's evaluation moved from `from` to `to` at `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub version: u32,
    pub from: Evaluation,
    pub to: Evaluation,
}

impl Transition {
    pub fn segment_changed(&self) -> bool {
        self.from.segment != self.to.segment
    }
}

/// Outcome of applying one fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Already applied before: nothing to do, nothing to emit.
    Duplicate,
    /// Applied, but what is published did not change.
    Unchanged,
    Changed(Transition),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerState {
    pub aggregate: CustomerAggregate,
    pub version: u32,
    pub published: Evaluation,
}

impl CustomerState {
    pub fn new(config: &RfmConfig) -> Self {
        CustomerState {
            aggregate: CustomerAggregate::default(),
            version: 0,
            published: Evaluation::initial(config),
        }
    }

    pub fn apply(&mut self, fact: &Fact, config: &RfmConfig, now: Timestamp) -> Update {
        if !self.aggregate.apply(fact) {
            return Update::Duplicate;
        }
        match self.rescore(config, now) {
            Some(t) => Update::Changed(t),
            None => Update::Unchanged,
        }
    }

    /// Re-evaluates without a new fact: a recency boundary passed or the merchant changed the configuration.
    pub fn rescore(&mut self, config: &RfmConfig, now: Timestamp) -> Option<Transition> {
        let next = evaluate(&self.aggregate, config, now);
        if next == self.published {
            return None;
        }
        let from = std::mem::replace(&mut self.published, next);
        self.version += 1;
        Some(Transition {
            version: self.version,
            from,
            to: next,
        })
    }
}
