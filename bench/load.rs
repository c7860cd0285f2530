//! The load generator: bounded in requests and time, on one thread, with awc.
//! The same client measures the gateway and the upstream directly, so the
//! difference between the two is what the gateway adds.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hermes::sse::SseParser;

/// Where requests go.
#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT/v1/chat/completions` or the upstream's.
    pub url: String,
    pub key: Option<String>,
    /// One pool of connections per target, kept across the slices of a
    /// scenario so that no slice pays for opening them again.
    pub client: awc::Client,
}

/// One measured request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub latency: Duration,
    /// Time to the first content delta (streams only).
    pub ttft: Option<Duration>,
    pub ok: bool,
    /// Why it failed (for the report).
    pub error: Option<String>,
}

/// The most common failure reasons of samples, for a failed scenario's message.
pub fn failure_summary(samples: &[Sample]) -> String {
    let mut counts = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok) {
        *counts
            .entry(s.error.clone().unwrap_or_else(|| "unknown".into()))
            .or_default() += 1;
    }
    top_reasons(&counts)
}

/// The three most common of counted failure reasons, as `3x reason; ...`.
fn top_reasons(counts: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<_> = counts.iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(*e.1));
    v.iter()
        .take(3)
        .map(|(e, n)| format!("{n}x {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What closed loops sent: requests, and the failed ones by reason.
#[derive(Default)]
pub struct Tally {
    pub requests: usize,
    failures: BTreeMap<String, usize>,
}

impl Tally {
    /// Requests that failed.
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    /// Adds another loop's counts to these.
    pub fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        for (reason, n) in other.failures {
            *self.failures.entry(reason).or_default() += n;
        }
    }

    /// The most common failure reasons, for a failed scenario's message.
    pub fn reasons(&self) -> String {
        top_reasons(&self.failures)
    }
}

/// An awc client with no connection cap and no timeout of its own.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .limit(0)
                .timeout(Duration::from_secs(30)),
        )
        .timeout(Duration::from_secs(120))
        .finish()
}

fn request(c: &awc::Client, t: &Target) -> awc::ClientRequest {
    let mut r = c
        .post(&t.url)
        .insert_header(("content-type", "application/json"));
    if let Some(k) = &t.key {
        r = r.bearer_auth(k);
    }
    r
}

/// One non-streaming request.
pub async fn plain(c: &awc::Client, t: &Target, body: &str) -> Sample {
    let started = Instant::now();
    let error = match request(c, t).send_body(body.to_string()).await {
        Ok(mut r) if r.status() == 200 => r
            .body()
            .limit(16 << 20)
            .await
            .err()
            .map(|e| format!("body: {e}")),
        Ok(r) => Some(format!("status {}", r.status())),
        Err(e) => Some(format!("send: {e}")),
    };
    Sample {
        latency: started.elapsed(),
        ttft: None,
        ok: error.is_none(),
        error,
    }
}

/// Just the delta text of a chunk, borrowed where it can be: the load
/// generator's own parsing cost stays small next to what it measures.
#[derive(serde::Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChoiceView<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
}

#[derive(serde::Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
}

/// One streaming request; `expect` is the exact answer text (checked).
pub async fn stream(c: &awc::Client, t: &Target, body: &str, expect: &str) -> Sample {
    let started = Instant::now();
    let mut ttft = None;
    let mut parser = SseParser::new();
    let mut text = String::new();
    let mut done = false;
    let mut broke = None;
    let error = match request(c, t).send_body(body.to_string()).await {
        Ok(mut r) if r.status() == 200 => {
            while let Some(chunk) = r.next().await {
                let bytes = match chunk {
                    Ok(b) => b,
                    Err(e) => {
                        broke.get_or_insert(format!("stream: {e}"));
                        break;
                    }
                };
                for ev in parser.push(&bytes).unwrap_or_default() {
                    if ev.data == "[DONE]" {
                        done = true;
                        continue;
                    }
                    let Ok(view) = serde_json::from_str::<ChunkView<'_>>(&ev.data) else {
                        continue;
                    };
                    if let Some(e) = &view.error {
                        broke = Some(format!(
                            "error chunk: {}",
                            e["message"].as_str().unwrap_or("?")
                        ));
                    }
                    let delta = view
                        .choices
                        .into_iter()
                        .next()
                        .and_then(|c| c.delta)
                        .and_then(|d| d.content);
                    if let Some(d) = delta.filter(|d| !d.is_empty()) {
                        ttft.get_or_insert_with(|| started.elapsed());
                        text.push_str(&d);
                    }
                }
            }
            match (broke, done) {
                (Some(e), _) => Some(e),
                (None, false) => Some("ended without [DONE]".into()),
                (None, true) if text != expect => Some(format!(
                    "text differs ({} of {} bytes)",
                    text.len(),
                    expect.len()
                )),
                _ => None,
            }
        }
        Ok(r) => Some(format!("status {}", r.status())),
        Err(e) => Some(format!("send: {e}")),
    };
    Sample {
        latency: started.elapsed(),
        ttft,
        ok: error.is_none(),
        error,
    }
}

/// Sends `rate` requests per second for `duration` without waiting for
/// answers (open loop), so a slow server shows up as latency, not as a lower
/// offered rate. Returns every sample.
pub async fn open_loop(t: &Target, body: &str, rate: u32, duration: Duration) -> Vec<Sample> {
    let c = t.client.clone();
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let samples = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let (c, t, body, samples) = (c.clone(), t.clone(), body.to_string(), samples.clone());
        handles.push(tokio::task::spawn_local(async move {
            let s = plain(&c, &t, &body).await;
            samples.borrow_mut().push(s);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    Rc::try_unwrap(samples)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

/// `workers` clients each sending back-to-back for `duration` (closed loop):
/// the highest throughput the target sustains.
pub async fn closed_loop(t: &Target, body: &str, workers: usize, duration: Duration) -> Tally {
    let c = t.client.clone();
    let end = Instant::now() + duration;
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (c, t, body, tally) = (c.clone(), t.clone(), body.to_string(), tally.clone());
        handles.push(tokio::task::spawn_local(async move {
            while Instant::now() < end {
                let s = plain(&c, &t, &body).await;
                let mut n = tally.borrow_mut();
                n.requests += 1;
                if let Some(e) = s.error {
                    *n.failures.entry(e).or_default() += 1;
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    tally.take()
}

/// `n` streams at once; every one must deliver exactly `expect`.
pub async fn many_streams(t: &Target, body: &str, n: usize, expect: &str) -> Vec<Sample> {
    let c = client();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, t, body, expect) = (c.clone(), t.clone(), body.to_string(), expect.to_string());
        handles.push(tokio::task::spawn_local(async move {
            stream(&c, &t, &body, &expect).await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap_or(Sample {
            latency: Duration::ZERO,
            ttft: None,
            ok: false,
            error: Some("task failed".into()),
        }));
    }
    out
}

/// The `p`-th percentile (0-100) of durations, in milliseconds.
pub fn pct(values: &mut [Duration], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort();
    let idx = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[idx.min(values.len() - 1)].as_secs_f64() * 1000.0
}
