//! W3C Trace Context `traceparent` values, as carried from the webhook through the input record's Kafka headers to
//! the `rfm.updated`, `churn_risk.detected` and `rfm.task` records and the dashboard frame.
//!
//! A value is parsed once where it enters (an HTTP header, a Kafka header) and carried as [`TraceParent`], so what
//! travels on is always well formed; an invalid value is dropped, never forwarded (the spec asks receivers to
//! restart the trace rather than pass garbage along).

/// The Kafka and HTTP header name.
pub const HEADER: &str = "traceparent";

/// A valid `traceparent`: version 00, a 16-byte trace id and an 8-byte parent (span) id, both non-zero, and flags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

/// Why a `traceparent` value was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("traceparent is not version-traceid-parentid-flags")]
    Shape,
    #[error("traceparent has an unsupported version")]
    Version,
    #[error("traceparent fields are not lowercase hex of the right length")]
    Hex,
    #[error("traceparent trace id or parent id is all zeros")]
    Zero,
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceParent {
    /// Parses a header value. Versions above 00 are read as 00 from their first four fields, as the spec asks of a
    /// receiver that knows only version 00; version ff is invalid.
    pub fn parse(raw: &str) -> Result<TraceParent, TraceParentError> {
        let raw = raw.trim();
        let mut fields = raw.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TraceParentError::Shape);
        };
        if !lower_hex(version, 2) || version == "ff" {
            return Err(TraceParentError::Version);
        }
        if version == "00" && fields.next().is_some() {
            return Err(TraceParentError::Shape);
        }
        if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
            return Err(TraceParentError::Hex);
        }
        if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
            return Err(TraceParentError::Zero);
        }
        Ok(TraceParent(format!("00-{trace}-{parent}-{flags}")))
    }

    /// A trace started here: `trace_id` (16 bytes) and `span_id` (8 bytes) come from the caller's randomness, since
    /// this crate does no I/O of its own. Sampled.
    pub fn start(trace_id: u128, span_id: u64) -> TraceParent {
        TraceParent(format!(
            "00-{:032x}-{:016x}-01",
            trace_id.max(1),
            span_id.max(1)
        ))
    }

    /// The same trace, with this hop's span as the parent of whatever comes next.
    pub fn child(&self, span_id: u64) -> TraceParent {
        TraceParent(format!(
            "00-{}-{:016x}-{}",
            self.trace_id(),
            span_id.max(1),
            &self.0[53..55]
        ))
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The 16-hex-digit parent (span) id.
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_parses_and_keeps_its_ids() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
        assert_eq!(tp.as_str(), EXAMPLE);
    }

    #[test]
    fn malformed_values_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert!(TraceParent::parse(value).is_err(), "{value:?} accepted");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(TraceParent::parse(later).unwrap().as_str(), EXAMPLE);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_parent() {
        let child = TraceParent::parse(EXAMPLE).unwrap().child(0xabc);
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(child.parent_id(), "0000000000000abc");
        assert!(child.as_str().ends_with("-01"));
        let started = TraceParent::start(7, 9);
        assert_eq!(TraceParent::parse(started.as_str()), Ok(started));
    }
}
