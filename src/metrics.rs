//! Process metrics, exposed in the OpenMetrics text format by the
//! `prometheus-client` crate.
//!
//! Every metric family is registered once at start; an observation finds
//! its series under a read lock and adds with an atomic (counters) or a
//! per-series lock (histograms), so no request waits on a global mutex. The
//! hottest series have typed label sets (the route and status of an HTTP
//! request, a turn's outcome, a tool); the rest take a few `(key, value)`
//! labels. Labels come from bounded sets (route patterns, outcomes, tool
//! names), never from raw paths. Gauges whose values live elsewhere (chat
//! platforms, delivery obligations) are written at render time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

/// Labels of the metrics without a typed label set.
pub type Labels = Vec<(&'static str, String)>;

type Hists<S> = Family<S, Histogram, fn() -> Histogram>;

/// An HTTP request's route pattern and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

/// A route pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

/// A turn's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// A tool call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolCall {
    tool: String,
    outcome: &'static str,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteStatus, Counter>,
    http_duration: Hists<Route>,
    overhead: Hists<Route>,
    turns: Family<Outcome, Counter>,
    ttft: Histogram,
    tool_calls: Family<ToolCall, Counter>,
    /// The other counters and histograms, by name.
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    hists: HashMap<&'static str, Hists<Labels>>,
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

/// A counter's name as registered: the encoder adds `_total` back.
fn base_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RouteStatus, Counter>::default();
        let http_duration = Hists::<Route>::new_with_constructor(histogram as fn() -> Histogram);
        let overhead = Hists::<Route>::new_with_constructor(histogram as fn() -> Histogram);
        let turns = Family::<Outcome, Counter>::default();
        let ttft = histogram();
        let tool_calls = Family::<ToolCall, Counter>::default();
        let mut counters = HashMap::new();
        let mut hists = HashMap::new();
        for (name, kind, help) in DESCRIPTIONS {
            let help = *help;
            match (*name, *kind) {
                ("hermes_http_requests_total", _) => {
                    registry.register(base_name(name), help, http_requests.clone());
                }
                ("hermes_http_request_duration_seconds", _) => {
                    registry.register(*name, help, http_duration.clone());
                }
                ("hermes_gateway_overhead_seconds", _) => {
                    registry.register(*name, help, overhead.clone());
                }
                ("hermes_upstream_requests_total", _) => {
                    registry.register(base_name(name), help, turns.clone());
                }
                ("hermes_upstream_ttft_seconds", _) => {
                    registry.register(*name, help, ttft.clone());
                }
                ("hermes_tool_calls_total", _) => {
                    registry.register(base_name(name), help, tool_calls.clone());
                }
                (_, "counter") => {
                    let f = Family::<Labels, Counter>::default();
                    registry.register(base_name(name), help, f.clone());
                    counters.insert(*name, f);
                }
                _ => {
                    let f = Hists::<Labels>::new_with_constructor(histogram as fn() -> Histogram);
                    registry.register(*name, help, f.clone());
                    hists.insert(*name, f);
                }
            }
        }
        Self {
            registry,
            http_requests,
            http_duration,
            overhead,
            turns,
            ttft,
            tool_calls,
            counters,
            hists,
            runs_in_flight: AtomicI64::new(0),
            sse_streams_open: AtomicI64::new(0),
            deliveries: Default::default(),
        }
    }
}

impl Metrics {
    /// Adds `n` to a counter without a typed label set (a name missing from
    /// the descriptions is a bug, logged once per call site's use).
    pub fn inc(&self, name: &'static str, labels: Labels, n: u64) {
        match self.counters.get(name) {
            Some(f) => {
                f.get_or_create(&labels).inc_by(n);
            }
            None => log::warn!("metrics: no counter {name}"),
        }
    }

    /// Records a value in a histogram without a typed label set.
    pub fn observe(&self, name: &'static str, labels: Labels, v: Duration) {
        match self.hists.get(name) {
            Some(f) => f.get_or_create(&labels).observe(v.as_secs_f64()),
            None => log::warn!("metrics: no histogram {name}"),
        }
    }

    /// One HTTP request.
    pub fn http_request(&self, route: String, status: u16, took: Duration) {
        let route = Route { route };
        self.http_duration
            .get_or_create(&route)
            .observe(took.as_secs_f64());
        let labels = RouteStatus {
            route: route.route,
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// One agent turn ended (`hermes_upstream_requests_total`), and the time
    /// the gateway added to it on `route`.
    pub fn turn(&self, outcome: &'static str, route: &'static str, overhead: Duration) {
        self.turns.get_or_create(&Outcome { outcome }).inc();
        self.overhead
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(overhead.as_secs_f64());
    }

    /// Time to a turn's first streamed delta.
    pub fn first_token(&self, after: Duration) {
        self.ttft.observe(after.as_secs_f64());
    }

    /// One tool call.
    pub fn tool_call(&self, tool: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.tool_calls
            .get_or_create(&ToolCall {
                tool: tool.to_string(),
                outcome,
            })
            .inc();
    }

    /// Changes a gauge.
    pub fn gauge_add(g: &AtomicI64, delta: i64) {
        g.fetch_add(delta, Ordering::Relaxed);
    }

    /// The text of `GET /metrics` (OpenMetrics), with each chat platform's
    /// state (up or not, and the numbers it reports: heartbeat latency,
    /// last sequence).
    pub fn render(&self, platforms: &BTreeMap<String, PlatformState>) -> String {
        let mut out = String::new();
        if let Err(e) = encode_registry(&mut out, &self.registry) {
            log::warn!("metrics: cannot encode: {e}");
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
        if let Err(e) = encode_eof(&mut out) {
            log::warn!("metrics: cannot encode: {e}");
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition: a
/// counter's HELP and TYPE name its samples (`…_total`), and there is no
/// `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_openmetrics() {
        let m = Metrics::default();
        m.http_request("/v1/models".into(), 200, Duration::from_millis(3));
        m.http_request("/v1/models".into(), 200, Duration::from_millis(30));
        m.turn(
            "completed",
            "/v1/chat/completions",
            Duration::from_micros(200),
        );
        m.tool_call("terminal", false);
        m.inc(
            "hermes_platform_messages_total",
            vec![("platform", "telegram".into()), ("direction", "in".into())],
            2,
        );
        let status = crate::platform_status::PlatformStatus::default();
        status.set("telegram", LinkState::Connected, None);
        status.set("discord", LinkState::Resuming, None);
        status.detail("discord", "last_sequence", serde_json::json!(42));
        let text = m.render(&status.snapshot());
        for line in [
            "# TYPE hermes_http_requests counter",
            "hermes_http_requests_total{route=\"/v1/models\",status=\"200\"} 2",
            "hermes_http_request_duration_seconds_bucket{le=\"0.005\",route=\"/v1/models\"} 1",
            "hermes_http_request_duration_seconds_count{route=\"/v1/models\"} 2",
            "hermes_upstream_requests_total{outcome=\"completed\"} 1",
            "hermes_gateway_overhead_seconds_bucket{le=\"0.00025\",route=\"/v1/chat/completions\"} 1",
            "hermes_tool_calls_total{tool=\"terminal\",outcome=\"error\"} 1",
            "hermes_platform_messages_total{platform=\"telegram\",direction=\"in\"} 2",
            "hermes_runs_in_flight 0",
            "hermes_platform_up{platform=\"telegram\"} 1",
            "hermes_platform_up{platform=\"discord\"} 0",
            "hermes_platform_last_sequence{platform=\"discord\"} 42",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        // The classic text format names a counter by its samples.
        let classic = to_prometheus_text(&text);
        assert!(classic.contains("# TYPE hermes_http_requests_total counter\n"));
        assert!(classic.contains("# HELP hermes_http_requests_total "));
        assert!(classic.contains("# TYPE hermes_http_request_duration_seconds histogram\n"));
        assert!(!classic.contains("# EOF"));
    }
}
