//! What a run measured: a latency histogram of the successful operations (microseconds), the
//! errors (counted, with the first distinct messages), and the servers' resource use; rendered as
//! a text summary or one JSON object.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::procs::ProcUsage;

/// Highest latency the histogram holds (a slower op is recorded as this value).
pub const MAX_LATENCY_US: u64 = 10 * 60 * 1_000_000;
/// Distinct error messages kept verbatim; the rest only count.
pub const MAX_DISTINCT_ERRORS: usize = 8;
/// Points of the latency CDF in the JSON report (enough for a smooth plot, small enough to read).
const MAX_CDF_POINTS: usize = 256;
/// Rows of the text histogram.
const HISTOGRAM_ROWS: usize = 12;
const HISTOGRAM_BAR_WIDTH: u64 = 40;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Errors of a run: the total, and how often each of the first distinct messages occurred.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorLog {
    pub count: u64,
    pub by_message: BTreeMap<String, u64>,
}

impl ErrorLog {
    /// Each message with its count, as the JSON reports list them.
    pub fn to_json(&self) -> Vec<Value> {
        self.by_message
            .iter()
            .map(|(message, count)| json!({ "message": message, "count": count }))
            .collect()
    }

    pub fn record(&mut self, message: &str) {
        self.record_n(message, 1);
    }

    pub fn record_n(&mut self, message: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.count += n;
        if let Some(seen) = self.by_message.get_mut(message) {
            *seen += n;
        } else if self.by_message.len() < MAX_DISTINCT_ERRORS {
            self.by_message.insert(message.to_string(), n);
        }
    }

    pub fn merge(&mut self, other: &ErrorLog) {
        self.count += other.count;
        for (message, n) in &other.by_message {
            if let Some(mine) = self.by_message.get_mut(message) {
                *mine += n;
            } else if self.by_message.len() < MAX_DISTINCT_ERRORS {
                self.by_message.insert(message.clone(), *n);
            }
        }
    }
}

/// One finished run.
#[derive(Debug)]
pub struct Report {
    pub workload: String,
    /// The settings that shaped the run, echoed in both renderings.
    pub settings: Vec<(String, Value)>,
    pub elapsed: Duration,
    /// Operations that succeeded (each one a histogram sample, except for watch-latency, whose
    /// samples are deliveries: one per event per watcher).
    pub ok_ops: u64,
    pub latency_us: Histogram<u64>,
    pub errors: ErrorLog,
    pub procs: Vec<ProcUsage>,
    /// CPU seconds this bench process spent during the run (all its client tasks).
    pub client_cpu_seconds: f64,
    /// CPU seconds the whole machine was busy during the run (servers, client and anything else).
    pub machine_busy_cpu_seconds: f64,
    /// Workload-specific numbers (e.g. events delivered).
    pub extra: Vec<(String, Value)>,
}

impl Report {
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok_ops as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let h = &self.latency_us;
        let settings: serde_json::Map<String, Value> = self.settings.iter().cloned().collect();
        let extra: serde_json::Map<String, Value> = self.extra.iter().cloned().collect();
        let errors = self.errors.to_json();
        json!({
            "workload": self.workload,
            "settings": settings,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok_ops": self.ok_ops,
            "ops_per_s": self.ops_per_sec(),
            "samples": h.len(),
            "latency_us": {
                "mean": h.mean(),
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
            "cdf_us": cdf_points(h),
            "error_count": self.errors.count,
            "errors": errors,
            "procs": self.procs.iter().map(ProcUsage::to_json).collect::<Vec<_>>(),
            "client_cpu_s": self.client_cpu_seconds,
            "machine_busy_cpu_s": self.machine_busy_cpu_seconds,
            "extra": extra,
        })
    }

    pub fn to_text(&self) -> String {
        let h = &self.latency_us;
        let mut out = String::new();
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("Summary: {} ({})\n", self.workload, settings.join(" ")));
        out.push_str(&format!(
            "  Total:    {:.3} s, {} ok ops, {:.1} ops/s\n",
            self.elapsed.as_secs_f64(),
            self.ok_ops,
            self.ops_per_sec()
        ));
        if h.is_empty() {
            out.push_str("  Latency:  no successful samples\n");
        } else {
            out.push_str(&format!(
                "  Latency:  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)\n",
                fmt_us(h.mean() as u64),
                fmt_us(h.value_at_quantile(0.5)),
                fmt_us(h.value_at_quantile(0.9)),
                fmt_us(h.value_at_quantile(0.99)),
                fmt_us(h.value_at_quantile(0.999)),
                fmt_us(h.max()),
                h.len()
            ));
        }
        for (key, value) in &self.extra {
            out.push_str(&format!("  {key}: {value}\n"));
        }
        if self.errors.count == 0 {
            out.push_str("  Errors:   none\n");
        } else {
            out.push_str(&format!(
                "  Errors:   {} (THIS RUN HAD ERRORS)\n",
                self.errors.count
            ));
            for (message, n) in &self.errors.by_message {
                out.push_str(&format!("    {n} × {message}\n"));
            }
        }
        for p in &self.procs {
            out.push_str(&format!("  {}\n", p.to_text()));
        }
        out.push_str(&format!(
            "  bench client: cpu {:.2} s; whole machine busy {:.2} cpu-s\n",
            self.client_cpu_seconds, self.machine_busy_cpu_seconds
        ));
        if !h.is_empty() {
            out.push_str("Latency histogram:\n");
            out.push_str(&text_histogram(h));
        }
        out
    }
}

/// `1.234ms`-style rendering of a microsecond count.
pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.3}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.3}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

/// `[latency_us, quantile]` pairs from the smallest to the largest sample, thinned to at most
/// `MAX_CDF_POINTS` (the last point, the maximum, is always kept).
pub fn cdf_points(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let all: Vec<[f64; 2]> = h
        .iter_quantiles(4)
        .map(|v| {
            [
                h.highest_equivalent(v.value_iterated_to()) as f64,
                v.quantile_iterated_to(),
            ]
        })
        .collect();
    let step = all.len().div_ceil(MAX_CDF_POINTS).max(1);
    let mut points: Vec<[f64; 2]> = all.iter().step_by(step).copied().collect();
    let last = *all.last().expect("non-empty");
    if points.last() != Some(&last) {
        points.push(last);
    }
    points
}

/// Log-spaced buckets from the fastest to the slowest sample, with a bar per bucket.
pub fn text_histogram(h: &Histogram<u64>) -> String {
    let low = h.min().max(1) as f64;
    let high = (h.max().max(1) as f64).max(low + 1.0);
    let ratio = (high / low).powf(1.0 / HISTOGRAM_ROWS as f64);
    let mut rows = Vec::with_capacity(HISTOGRAM_ROWS);
    let mut below = 0u64;
    let mut lower_bound = low;
    for row in 0..HISTOGRAM_ROWS {
        let upper = if row + 1 == HISTOGRAM_ROWS {
            h.max()
        } else {
            (low * ratio.powi(row as i32 + 1)) as u64
        };
        let cumulative = h.count_between(0, upper);
        let count = cumulative.saturating_sub(below);
        below = cumulative.max(below);
        rows.push((lower_bound as u64, upper, count));
        lower_bound = upper as f64;
    }
    let most = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let mut out = String::new();
    for (from, to, count) in rows {
        let bar = "∎".repeat((count * HISTOGRAM_BAR_WIDTH).div_ceil(most) as usize);
        out.push_str(&format!(
            "  {:>10} – {:>10} [{count:>8}]  {bar}\n",
            fmt_us(from),
            fmt_us(to)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_log_counts_everything_but_keeps_only_the_first_distinct_messages() {
        let mut log = ErrorLog::default();
        for i in 0..20 {
            log.record(&format!("error {}", i % 10));
        }
        assert_eq!(log.count, 20);
        assert_eq!(log.by_message.len(), MAX_DISTINCT_ERRORS);
        assert_eq!(log.by_message["error 0"], 2);
        let mut total = ErrorLog::default();
        total.merge(&log);
        total.merge(&log);
        assert_eq!(total.count, 40);
        assert_eq!(total.by_message["error 3"], 4);
    }

    #[test]
    fn cdf_is_monotone_and_ends_at_the_maximum() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            h.record(us * 3).expect("in range");
        }
        let points = cdf_points(&h);
        assert!(points.len() <= MAX_CDF_POINTS + 1);
        assert!(
            points
                .windows(2)
                .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1])
        );
        let last = points.last().expect("points");
        assert_eq!(last[1], 1.0);
        assert_eq!(last[0] as u64, h.highest_equivalent(h.max()));
    }

    #[test]
    fn text_histogram_rows_add_up_to_the_sample_count() {
        let mut h = new_histogram();
        for us in [100u64, 150, 200, 1_000, 5_000, 5_000, 80_000] {
            h.record(us).expect("in range");
        }
        let text = text_histogram(&h);
        let counted: u64 = text
            .lines()
            .map(|l| {
                let inside = l
                    .split('[')
                    .nth(1)
                    .and_then(|r| r.split(']').next())
                    .expect("count");
                inside.trim().parse::<u64>().expect("number")
            })
            .sum();
        assert_eq!(counted, 7);
    }
}
