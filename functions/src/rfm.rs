//! The three scores as a value: recency, frequency and monetary, each 1..=5. A leaf, so the configuration, the
//! segment rules and the scoring can all speak of it without importing one another in a circle.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The three scores, each 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rfm {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

impl Rfm {
    pub const fn new(recency: u8, frequency: u8, monetary: u8) -> Self {
        Rfm {
            recency,
            frequency,
            monetary,
        }
    }

    /// All 125 triples, for totality checks.
    pub fn all() -> impl Iterator<Item = Rfm> {
        (1..=5).flat_map(|r| (1..=5).flat_map(move |f| (1..=5).map(move |m| Rfm::new(r, f, m))))
    }
}

impl fmt::Display for Rfm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "R{} F{} M{}",
            self.recency, self.frequency, self.monetary
        )
    }
}
