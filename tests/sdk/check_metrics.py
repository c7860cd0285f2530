"""Parses the gateway's /metrics with the real parsers of `prometheus_client`
after the SDK tests ran: the strict OpenMetrics parser (what the gateway
serves) and the classic Prometheus text parser (older scrapers), and checks
the counters moved. Run by tests/sdk/run.sh (HERMES_URL, HERMES_KEY set)."""
import os
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as classic_families

base = os.environ["HERMES_URL"].rsplit("/v1", 1)[0]
auth = {"Authorization": "Bearer " + os.environ["HERMES_KEY"]}
# What Prometheus asks for, and what older scrapers get.
scraper = dict(auth, Accept="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
res = urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=scraper), timeout=10)
content_type = res.headers.get("Content-Type", "")
text = res.read().decode()
families = {f.name: f for f in text_string_to_metric_families(text)}
plain = urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=auth), timeout=10)
classic = {f.name for f in classic_families(plain.read().decode())}
failed = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + "metrics " + what)
    if not cond:
        failed.append(what)


expected = {
    "hermes_http_requests": "counter",
    "hermes_http_request_duration_seconds": "histogram",
    "hermes_gateway_overhead_seconds": "histogram",
    "hermes_upstream_requests": "counter",
    "hermes_upstream_ttft_seconds": "histogram",
    "hermes_runs_in_flight": "gauge",
    "hermes_sse_streams_open": "gauge",
    "hermes_tool_calls": "counter",
    "hermes_platform_up": "gauge",
}
# Families with labels appear once they have a series (a chat platform in use).
when_used = {"hermes_platform_messages": "counter", "hermes_stream_preview_edits": "counter"}
check(content_type.startswith("application/openmetrics-text"), f"served as OpenMetrics ({content_type})")
for name, kind in expected.items():
    check(name in families and families[name].type == kind, f"{name} is a {kind}")
for name, kind in when_used.items():
    if name in families:
        check(families[name].type == kind, f"{name} is a {kind}")
check(set(expected) <= classic, "the classic text parser reads every family too")

samples = [s for f in families.values() for s in f.samples]
chat_ok = sum(
    s.value
    for s in samples
    if s.name == "hermes_http_requests_total"
    and s.labels.get("route") == "/v1/chat/completions"
    and s.labels.get("status") == "200"
)
check(chat_ok >= 10, f"chat completions counted ({chat_ok:.0f})")
tools = sum(s.value for s in samples if s.name == "hermes_tool_calls_total" and s.labels.get("tool") == "terminal")
check(tools >= 1, f"tool calls counted ({tools:.0f})")
failures = sum(s.value for s in samples if s.name == "hermes_upstream_requests_total" and s.labels.get("outcome") == "failed")
check(failures >= 1, f"failed turns counted ({failures:.0f})")
ttft = [s.value for s in samples if s.name == "hermes_upstream_ttft_seconds_count"]
check(ttft and ttft[0] >= 1, "time to first token observed")
print(f"prometheus_client: {len(expected) + 6 - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
