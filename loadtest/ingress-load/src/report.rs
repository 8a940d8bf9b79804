//! The run's figures as one JSON object: rate, latency percentiles, statuses, the Kafka check, and CPU time — the
//! generator's own (getrusage) and that of any watched process (`/proc/<pid>/stat`) — per request, so a run says
//! whether the generator was the bottleneck and what one webhook costs the service.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::driver::Tally;
use crate::verify::Checked;

/// User + system CPU seconds of this process, from getrusage.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given; a zeroed rusage is a valid value of it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return f64::NAN;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// User + system CPU seconds of another process (its threads included), from `/proc/<pid>/stat`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

/// A process watched during the run: a label and its CPU seconds when the measured part began.
pub struct Watched {
    pub label: String,
    pub pid: u32,
    pub cpu_at_start: Option<f64>,
}

/// Notes the CPU seconds of each `(label, pid)` now, the start of the measured part.
pub fn watch(processes: &[(String, u32)]) -> Vec<Watched> {
    processes
        .iter()
        .map(|(label, pid)| Watched {
            label: label.clone(),
            pid: *pid,
            cpu_at_start: process_cpu_seconds(*pid),
        })
        .collect()
}

fn ms(micros: u64) -> f64 {
    (micros as f64 / 10.0).round() / 100.0
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p99_9_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": (h.mean() / 10.0).round() / 100.0,
    })
}

pub struct Inputs<'a> {
    pub label: &'a str,
    pub connections: usize,
    pub rate: Option<f64>,
    pub measured: Duration,
    pub tally: &'a Tally,
    pub generator_cpu: f64,
    pub watched: &'a [Watched],
}

/// The Kafka check's result.
pub fn kafka(c: &Checked) -> Value {
    json!({
        "accepted_in_run": c.accepted,
        "found": c.found,
        "missing": c.missing,
        "first_missing": c.first_missing,
        "offset_gaps": c.gaps,
        "beyond_reported_end": c.beyond_reported_end,
        "reread": c.reread,
        "timed_out": c.timed_out,
        "duplicated": c.duplicated,
        "on_kafka_without_200": c.unanswered,
        "records_read": c.records_read,
    })
}

pub fn build(i: &Inputs<'_>) -> Value {
    let seconds = i.measured.as_secs_f64();
    let per_s = i.tally.measured_ok as f64 / seconds;
    let per_request_us = |cpu: f64| (cpu * 1e6 / i.tally.measured_ok.max(1) as f64).round();
    let watched: Vec<Value> = i
        .watched
        .iter()
        .map(|w| {
            let cpu = process_cpu_seconds(w.pid)
                .zip(w.cpu_at_start)
                .map(|(now, then)| now - then);
            json!({
                "label": w.label,
                "pid": w.pid,
                "cpu_seconds": cpu.map(|c| (c * 100.0).round() / 100.0),
                "cores": cpu.map(|c| (c / seconds * 100.0).round() / 100.0),
                "cpu_us_per_request": cpu.map(per_request_us),
            })
        })
        .collect();
    json!({
        "label": i.label,
        "connections": i.connections,
        "target_rate": i.rate,
        "seconds": (seconds * 100.0).round() / 100.0,
        "accepted": i.tally.measured_ok,
        "rate_per_s": per_s.round(),
        "latency": percentiles(&i.tally.latency),
        "worst_ms_per_second": i.tally.worst_per_second.iter().map(|&u| ms(u)).collect::<Vec<_>>(),
        "other_statuses": i.tally.other_status.iter().map(|(s, n)| json!({"status": s, "count": n})).collect::<Vec<_>>(),
        "transport_errors": i.tally.transport_errors,
        "first_error": i.tally.first_error,
        "generator": {
            "cpu_seconds": (i.generator_cpu * 100.0).round() / 100.0,
            "cores": (i.generator_cpu / seconds * 100.0).round() / 100.0,
            "cpu_us_per_request": per_request_us(i.generator_cpu),
        },
        "watched": watched,
    })
}
