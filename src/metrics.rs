//! Process metrics in the Prometheus text format.
//!
//! A small registry without a metrics crate: counters and histograms keyed by
//! a few labels, behind one mutex each (updates are a hash lookup and an
//! add; contention is negligible next to an HTTP request). Labels come from
//! bounded sets (route patterns, outcomes, tool names), never from raw paths.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::platform_status::{LinkState, PlatformState};

/// The numbers platforms report in their status details, as gauges
/// `hermes_platform_<key>{platform=…}`.
const PLATFORM_GAUGES: &[(&str, &str)] = &[
    (
        "heartbeat_latency_ms",
        "Time from the last heartbeat to its acknowledgement (Discord).",
    ),
    (
        "last_sequence",
        "Sequence number of the last Gateway event received (Discord).",
    ),
];

/// Histogram buckets in seconds: fine below a millisecond (gateway
/// overhead), coarse up to minutes (model time).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default, Clone)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

type Labels = Vec<(&'static str, String)>;

/// Every metric the gateway exports.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    hists: Mutex<BTreeMap<(&'static str, Labels), Hist>>,
    /// Agent runs in flight over every front door.
    pub runs_in_flight: AtomicI64,
    /// SSE responses currently open.
    pub sse_streams_open: AtomicI64,
    /// Chat answers not yet delivered (their delivery obligations).
    pub deliveries: std::sync::Arc<crate::deliveries::OpenSet>,
}

/// Help text and type of each metric, in output order.
const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    (
        "hermes_http_requests_total",
        "counter",
        "HTTP requests by route pattern and status.",
    ),
    (
        "hermes_http_request_duration_seconds",
        "histogram",
        "HTTP request duration (until the response head for streams).",
    ),
    (
        "hermes_gateway_overhead_seconds",
        "histogram",
        "Run time minus time waiting on the upstream model and tools.",
    ),
    (
        "hermes_upstream_requests_total",
        "counter",
        "Agent turns by outcome.",
    ),
    (
        "hermes_upstream_ttft_seconds",
        "histogram",
        "Time to the first streamed delta of a turn.",
    ),
    (
        "hermes_tool_calls_total",
        "counter",
        "Tool calls by tool and outcome.",
    ),
    (
        "hermes_runs_total",
        "counter",
        "/v1/runs runs by outcome (started, replayed, completed, failed, cancelled, interrupted).",
    ),
    (
        "hermes_stream_resumes_total",
        "counter",
        "Event streams read again by a returning client, by kind (response, run).",
    ),
    (
        "hermes_platform_messages_total",
        "counter",
        "Chat platform messages by platform and direction.",
    ),
    (
        "hermes_stream_preview_edits_total",
        "counter",
        "Stream preview edits by platform and outcome.",
    ),
];

impl Metrics {
    /// Adds `n` to a counter.
    pub fn inc(&self, name: &'static str, labels: Labels, n: u64) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((name, labels))
            .or_default() += n;
    }

    /// Records a value in a histogram.
    pub fn observe(&self, name: &'static str, labels: Labels, v: Duration) {
        self.hists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((name, labels))
            .or_default()
            .observe(v.as_secs_f64());
    }

    /// One HTTP request.
    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        self.inc(
            "hermes_http_requests_total",
            vec![("route", route.to_string()), ("status", status.to_string())],
            1,
        );
        self.observe(
            "hermes_http_request_duration_seconds",
            vec![("route", route.to_string())],
            took,
        );
    }

    /// Moves a gauge by `delta`.
    pub fn gauge_add(g: &AtomicI64, delta: i64) {
        g.fetch_add(delta, Ordering::Relaxed);
    }

    /// The text exposition.
    /// The text of `GET /metrics`, with each chat platform's state (up or
    /// not, and the numbers it reports: heartbeat latency, last sequence).
    pub fn render(&self, platforms: &BTreeMap<String, PlatformState>) -> String {
        let mut out = String::new();
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let hists = self.hists.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, kind, help) in DESCRIPTIONS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if *kind == "counter" {
                for ((n, labels), v) in counters.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{n}{} {v}", fmt_labels(labels, None));
                }
            } else {
                for ((n, labels), h) in hists.iter().filter(|((n, _), _)| n == name) {
                    for (i, b) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{n}_bucket{} {}",
                            fmt_labels(labels, Some(&b.to_string())),
                            h.counts[i]
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{n}_bucket{} {}",
                        fmt_labels(labels, Some("+Inf")),
                        h.count
                    );
                    let _ = writeln!(out, "{n}_sum{} {}", fmt_labels(labels, None), h.sum);
                    let _ = writeln!(out, "{n}_count{} {}", fmt_labels(labels, None), h.count);
                }
            }
        }
        let gauges = [
            (
                "hermes_runs_in_flight",
                "Agent runs in flight.",
                self.runs_in_flight.load(Ordering::Relaxed),
            ),
            (
                "hermes_sse_streams_open",
                "Open SSE responses.",
                self.sse_streams_open.load(Ordering::Relaxed),
            ),
        ];
        let (open, oldest) = self.deliveries.summary(crate::clock::unix_now());
        let deliveries = [
            (
                "hermes_delivery_obligations_open",
                "Chat answers not yet delivered.",
                open as i64,
            ),
            (
                "hermes_delivery_oldest_age_seconds",
                "Age of the oldest chat answer not yet delivered.",
                oldest as i64,
            ),
        ];
        for (name, help, v) in gauges.into_iter().chain(deliveries) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP hermes_platform_up Whether a chat platform is connected.\n# TYPE hermes_platform_up gauge"
        );
        for (p, st) in platforms {
            let up = u8::from(st.state == LinkState::Connected);
            let _ = writeln!(out, "hermes_platform_up{{platform=\"{}\"}} {up}", escape(p));
        }
        for (key, help) in PLATFORM_GAUGES {
            let _ = writeln!(
                out,
                "# HELP hermes_platform_{key} {help}\n# TYPE hermes_platform_{key} gauge"
            );
            for (p, st) in platforms {
                if let Some(v) = st.details.get(key).and_then(serde_json::Value::as_f64) {
                    let _ = writeln!(
                        out,
                        "hermes_platform_{key}{{platform=\"{}\"}} {v}",
                        escape(p)
                    );
                }
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.http_request("/v1/models", 200, Duration::from_millis(3));
        m.http_request("/v1/models", 200, Duration::from_millis(30));
        let status = crate::platform_status::PlatformStatus::default();
        status.set("telegram", LinkState::Connected, None);
        status.set("discord", LinkState::Resuming, None);
        status.detail("discord", "last_sequence", serde_json::json!(42));
        let text = m.render(&status.snapshot());
        assert!(
            text.contains("hermes_http_requests_total{route=\"/v1/models\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "hermes_http_request_duration_seconds_bucket{route=\"/v1/models\",le=\"0.005\"} 1"
        ));
        assert!(
            text.contains("hermes_http_request_duration_seconds_count{route=\"/v1/models\"} 2")
        );
        assert!(text.contains("hermes_platform_up{platform=\"telegram\"} 1"));
        assert!(text.contains("hermes_platform_up{platform=\"discord\"} 0"));
        assert!(text.contains("hermes_platform_last_sequence{platform=\"discord\"} 42"));
    }
}
