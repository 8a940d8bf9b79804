//! The run's figures: sockets held, webhook → nudge latency percentiles (from acceptance and from sending), nudges
//! that never came, and the generator's own CPU time beside the wall time, so a run can tell whether the
//! generator was the bottleneck. With `--server-pid`, the server's resident and peak memory too. With
//! `--dashboards`, `first_seen` is when each order first showed on some dashboard, and `frames` has every socket's
//! samples (see `dashboards`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::dashboards::Frames;
use crate::orders::Sent;
use crate::sockets::{Hub, Opened};
use crate::Options;

pub struct Report {
    value: Value,
}

/// The value at quantile `q` of sorted milliseconds (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some((sorted[rank - 1] * 100.0).round() / 100.0)
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "count": ms.len(),
        "p50_ms": quantile(&ms, 0.50),
        "p90_ms": quantile(&ms, 0.90),
        "p99_ms": quantile(&ms, 0.99),
        "max_ms": ms.last(),
    })
}

/// This process's user + system CPU seconds (Linux `/proc/self/stat`, in clock ticks of 1/100 s).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn memory_mib(pid: u32) -> Option<Value> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((kib / 1024.0 * 10.0).round() / 10.0)
    };
    Some(json!({ "rss_mib": field("VmRSS:"), "peak_rss_mib": field("VmHWM:") }))
}

impl Report {
    pub fn build(
        options: &Options,
        opened: &Opened,
        sent: &Sent,
        hub: &Hub,
        frames: Option<&Frames>,
        wall: Duration,
        server_pid: Option<u32>,
    ) -> Report {
        let mut from_accepted = Vec::with_capacity(sent.accepted.len());
        let mut from_sent = Vec::with_capacity(sent.accepted.len());
        let mut before_answer = 0u64;
        for &slot in &sent.accepted {
            let nudged = hub.arrived_at[slot].load(Ordering::Acquire);
            if nudged == 0 {
                continue;
            }
            let accepted = hub.accepted_at[slot].load(Ordering::Acquire);
            let sent_at = hub.sent_at[slot].load(Ordering::Acquire);
            // The nudge can beat the HTTP answer to this process; such a sample counts as zero from acceptance.
            if nudged < accepted {
                before_answer += 1;
            }
            from_accepted.push(nudged.saturating_sub(accepted) as f64 / 1e6);
            from_sent.push(nudged.saturating_sub(sent_at) as f64 / 1e6);
        }
        let received = from_sent.len();
        let arrivals = json!({
            "received": received,
            "missing": sent.accepted.len() - received,
            "before_http_answer": before_answer,
            "from_accepted": summary(from_accepted),
            "from_sent": summary(from_sent),
        });
        let mut value = json!({
            "sockets": {
                "asked": options.sockets,
                "open": opened.open,
                "failed": opened.failed,
                "first_error": opened.first_error,
                "open_seconds": (opened.seconds * 10.0).round() / 10.0,
                "ended_early": hub.ended_early.load(Ordering::Relaxed),
            },
            "orders": {
                "asked": options.orders,
                "rate_per_s": options.order_rate,
                "accepted": sent.accepted.len(),
                "refused": sent.refused,
                "first_error": sent.first_error,
                "send_seconds": (sent.seconds * 100.0).round() / 100.0,
            },
            "generator": {
                "wall_seconds": (wall.as_secs_f64() * 10.0).round() / 10.0,
                "cpu_seconds": own_cpu_seconds(),
            },
            "server_memory": server_pid.and_then(memory_mib),
        });
        match frames {
            Some(frames) => {
                value["first_seen"] = arrivals;
                value["frames"] = frames.json();
            }
            None => value["nudges"] = arrivals,
        }
        Report { value }
    }

    pub fn json(&self) -> &Value {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let ms: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&ms, 0.5), Some(50.0));
        assert_eq!(quantile(&ms, 0.99), Some(99.0));
        assert_eq!(quantile(&ms, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
