//! The client of the upstream model server (OpenAI Chat Completions over HTTP).
//!
//! One [`UpstreamClient`] per process, cheap to clone. The awc client under it
//! is per thread (awc is single-threaded), built once per arbiter thread and
//! reused, so connections and TLS sessions are pooled, never rebuilt per request.
//!
//! Behaviour: streaming with `stream_options.include_usage`
//! whenever someone listens for deltas; a stream that fails before its first
//! delta falls back to one non-streaming request. Only what provably did not
//! reach the model is sent again: connect errors and 408/429/502/503/504 are
//! retried with exponential back-off and jitter, honouring `Retry-After`; a
//! 500 (often "your input is invalid") or a connection the server closed
//! after taking the request is not, so a call is never billed twice. Other
//! statuses are returned with the server's own message.
//!
//! A stream's body is read to its end after `[DONE]`, so its connection goes
//! back to the pool instead of being closed (every streamed step would
//! otherwise pay a new TCP and TLS handshake). A server that reports no
//! usage gets an estimate, marked as one ([`Usage::estimate`]).

pub mod accumulate;
pub mod params;

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_http::HttpMessage;
use awc::error::PayloadError;
use awc::http::StatusCode;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;

pub use accumulate::{Completion, Delta};
pub use params::{MaxTokens, Sampling, ToolChoice};

use crate::config::Config;
use crate::openai::{self, ChunkIn, CompletionIn, Message, Usage};
use crate::sse::SseParser;

/// First retry waits about this long; each further retry doubles it.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
/// No back-off wait is longer than this.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(8);
/// A server's `Retry-After` is honoured up to this long; beyond, the error is returned.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Largest non-streamed response body read.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest error body read (only its message is kept).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Idle upstream connections are kept this long for reuse.
const CONN_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Bytes read after `[DONE]` to finish a stream's body (normally just the
/// chunked terminator); a server that keeps sending is cut off and its
/// connection closed instead of returned to the pool.
const MAX_TRAILING_BYTES: usize = 64 * 1024;
/// The pause before the non-streamed retry of a stream that failed.
const FALLBACK_PAUSE: Duration = Duration::from_millis(200);
/// How long the end of a stream's body may take after `[DONE]`.
const TRAILER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach the upstream.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Bearer key sent only to `base_url`.
    pub api_key: Option<String>,
    /// Model name sent upstream.
    pub model: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub chunk_timeout: Duration,
    pub max_attempts: u32,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &self.api_key.as_deref().map(crate::secrets::mask),
            )
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl UpstreamSettings {
    /// The settings of a configuration, or the reason it has no usable upstream.
    pub fn from_config(c: &Config) -> Result<Self, String> {
        if let Some(problem) = c.upstream_problem() {
            return Err(problem);
        }
        Ok(Self {
            base_url: c.base_url(),
            api_key: c.model.api_key.clone(),
            model: c.model_name().unwrap_or_default(),
            connect_timeout: Duration::from_secs_f64(c.model.connect_timeout),
            response_timeout: Duration::from_secs_f64(c.model.response_timeout),
            chunk_timeout: Duration::from_secs_f64(c.model.chunk_timeout),
            max_attempts: c.model.max_attempts,
        })
    }
}

/// Why an upstream call failed. Messages keep the upstream's own words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the model server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the model server did not answer within {secs} s ({what})")]
    Timeout { what: &'static str, secs: u64 },
    #[error("the model server answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    #[error("the model server's stream broke off: {0}")]
    Stream(String),
    #[error("the model server sent a response that is not a chat completion: {0}")]
    Protocol(String),
    #[error(
        "the model server closed the connection after receiving the request, without answering"
    )]
    Dropped,
}

/// Phrases model servers use when the conversation does not fit the model's
/// context (OpenAI and vLLM: "maximum context length"; llama.cpp: "exceed
/// context window"; Anthropic via OpenRouter: "prompt is too long").
const CONTEXT_OVERFLOW_PHRASES: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "exceeds the context",
];

impl UpstreamError {
    /// The conversation is too long for the model: the client's input is at
    /// fault (a 400 for it), not the gateway.
    pub fn is_context_overflow(&self) -> bool {
        match self {
            Self::Status {
                status, message, ..
            } if (400..500).contains(status) || *status == 500 => {
                let m = message.to_ascii_lowercase();
                CONTEXT_OVERFLOW_PHRASES.iter().any(|p| m.contains(p))
            }
            _ => false,
        }
    }

    /// The model server's own rate limit, still in force after the retries,
    /// with the wait it asked for.
    pub fn rate_limited(&self) -> Option<Option<Duration>> {
        match self {
            Self::Status {
                status: 429,
                retry_after,
                ..
            } => Some(*retry_after),
            _ => None,
        }
    }

    /// What the user can do about it, as a sentence fragment (may be empty).
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Connect { .. } => {
                " (check OPENAI_BASE_URL / model.base_url and that the model server is running)"
            }
            Self::Status {
                status: 401 | 403, ..
            } => {
                " (check the upstream API key: OPENAI_API_KEY, OPENROUTER_API_KEY or model.api_key)"
            }
            Self::Status { status: 404, .. } => {
                " (check the model name HERMES_MODEL and the base URL)"
            }
            _ => "",
        }
    }
}

/// What the agent sends: the conversation, the tool schemas and the
/// client's sampling parameters.
pub struct ChatRequest<'a> {
    pub messages: &'a [Message],
    /// The tool schemas as a JSON array, `None` for no tools.
    pub tools: Option<&'a serde_json::value::RawValue>,
    /// `tool_choice` for this call (sent only with tools).
    pub tool_choice: Value,
    /// Stream (someone listens for deltas) or ask for the whole answer.
    pub stream: bool,
    pub sampling: &'a Sampling,
}

/// Receives deltas while a completion streams.
pub trait DeltaSink {
    /// Called for each delta, in order; awaiting applies back-pressure.
    fn delta(&mut self, delta: Delta) -> impl Future<Output = ()>;
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(flatten)]
    sampling: &'a Sampling,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The upstream model client.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    settings: Arc<UpstreamSettings>,
    /// Cleared once the server showed it cannot stream while tools are
    /// offered (llama-cpp-python's function-calling format refuses that
    /// after sending its headers): calls with tools then ask for the whole
    /// answer at once instead of paying a failed stream every time.
    streams_with_tools: Arc<AtomicBool>,
}

thread_local! {
    /// One awc client per thread, keyed by its connect timeout (the only
    /// connector setting that comes from configuration).
    static HTTP: RefCell<Option<(Duration, awc::Client)>> = const { RefCell::new(None) };
}

/// The rustls configuration: ring provider, Mozilla roots, HTTP/2 and 1.1.
pub fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(Arc::new(cfg))
}

/// This thread's shared awc client (built on first use).
pub fn http_client(connect_timeout: Duration) -> awc::Client {
    HTTP.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some((t, c)) = slot.as_ref()
            && *t == connect_timeout
        {
            return c.clone();
        }
        // `limit(0)`: no cap on simultaneous connections. awc's default of
        // 100 per client would queue every stream beyond the hundredth on
        // this thread until one ends.
        let mut connector = awc::Connector::new()
            .timeout(connect_timeout)
            .conn_keep_alive(CONN_KEEP_ALIVE)
            .limit(0);
        if let Some(tls) = tls_config() {
            connector = connector.rustls_0_23(tls);
        }
        let client = awc::Client::builder()
            .connector(connector)
            .disable_timeout()
            .disable_redirects()
            .no_default_headers()
            .finish();
        *slot = Some((connect_timeout, client.clone()));
        client
    })
}

impl UpstreamClient {
    /// A client for these settings.
    pub fn new(settings: UpstreamSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            streams_with_tools: Arc::new(AtomicBool::new(true)),
        }
    }

    /// One chat completion. Streams deltas into `sink` when `req.stream`.
    /// When the server reports no usage, the completion carries an estimate.
    pub async fn chat<S: DeltaSink>(
        &self,
        req: &ChatRequest<'_>,
        sink: &mut S,
    ) -> Result<Completion, UpstreamError> {
        let mut completion = self.call(req, sink).await?;
        if completion.usage.is_none() {
            let prompt_chars = req.messages.iter().map(message_chars).sum::<usize>()
                + req.tools.map_or(0, |t| t.get().len());
            completion.usage = Some(Usage::estimate(prompt_chars, completion.output_chars()));
        }
        Ok(completion)
    }

    async fn call<S: DeltaSink>(
        &self,
        req: &ChatRequest<'_>,
        sink: &mut S,
    ) -> Result<Completion, UpstreamError> {
        let with_tools = req.tools.is_some();
        if !req.stream || (with_tools && !self.streams_with_tools.load(Ordering::Relaxed)) {
            let completion = self.whole(req).await?;
            if req.stream {
                forward_whole(&completion, sink).await;
            }
            return Ok(completion);
        }
        let body = self.body(req, true)?;
        let resp = match self.send(body).await {
            Ok(resp) => resp,
            // The server took the streamed request and hung up without a
            // word (llama-cpp-python does this when it cannot stream with the
            // tools offered): a stream that failed before its first delta,
            // so the answer is asked for once, whole.
            Err(UpstreamError::Dropped) => return self.stream_failed(req, sink, with_tools).await,
            Err(e) => return Err(e),
        };
        let is_sse = resp
            .headers()
            .get(awc::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            // The server ignored `stream: true` and answered in one piece.
            let completion = self.read_whole(resp).await?;
            forward_whole(&completion, sink).await;
            return Ok(completion);
        }
        // Only the body is read from here on: the response head (its header
        // map, a few KiB) and the request's spent timer are freed now rather
        // than held for the whole stream.
        let mut resp = resp;
        let body = resp.take_payload();
        drop(resp);
        let mut acc = accumulate::StreamAccumulator::new();
        match self.read_stream(body, &mut acc, sink).await {
            Ok(()) => {
                let (completion, tail) = acc.finish();
                for d in tail {
                    sink.delta(d).await;
                }
                Ok(completion)
            }
            Err(e) if !acc.saw_output() => {
                log::warn!(
                    "upstream stream failed before its first delta ({e}); retrying without streaming"
                );
                self.stream_failed(req, sink, with_tools).await
            }
            Err(e) => Err(e),
        }
    }

    /// A stream failed before its first delta: one non-streamed request, and
    /// when it works while tools were offered, later calls with tools ask
    /// for whole answers from the start.
    async fn stream_failed<S: DeltaSink>(
        &self,
        req: &ChatRequest<'_>,
        sink: &mut S,
        with_tools: bool,
    ) -> Result<Completion, UpstreamError> {
        // A server that broke a stream off may still be closing its idle
        // connections (uvicorn does after an error in a response); a short
        // pause lets the pool see them closed instead of reusing one that
        // is about to be reset.
        tokio::time::sleep(FALLBACK_PAUSE).await;
        let completion = self.whole(req).await?;
        if with_tools && self.streams_with_tools.swap(false, Ordering::Relaxed) {
            log::warn!(
                "the model server cannot stream while tools are offered; \
                 answers that may call tools now arrive whole"
            );
        }
        forward_whole(&completion, sink).await;
        Ok(completion)
    }

    fn body(&self, req: &ChatRequest<'_>, stream: bool) -> Result<Bytes, UpstreamError> {
        let (max_tokens, max_completion_tokens) = match req.sampling.max_tokens {
            None => (None, None),
            Some(MaxTokens::Legacy(n)) => (Some(n), None),
            Some(MaxTokens::Completion(n)) => (None, Some(n)),
            // OpenAI's reasoning models refuse `max_tokens`.
            Some(MaxTokens::Unnamed(n)) if self.settings.base_url.contains("api.openai.com") => {
                (None, Some(n))
            }
            Some(MaxTokens::Unnamed(n)) => (Some(n), None),
        };
        let body = Body {
            model: &self.settings.model,
            messages: req.messages,
            tools: req.tools,
            tool_choice: req.tools.is_some().then_some(&req.tool_choice),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            max_tokens,
            max_completion_tokens,
            sampling: req.sampling,
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))
    }

    async fn whole(&self, req: &ChatRequest<'_>) -> Result<Completion, UpstreamError> {
        let body = self.body(req, false)?;
        let resp = self.send(body).await?;
        self.read_whole(resp).await
    }

    async fn read_whole(&self, resp: awc::ClientResponse) -> Result<Completion, UpstreamError> {
        let mut resp = resp.timeout(self.settings.response_timeout);
        let bytes = resp
            .body()
            .limit(MAX_BODY_BYTES)
            .await
            .map_err(|e| UpstreamError::Stream(e.to_string()))?;
        let parsed: CompletionIn =
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Protocol(format!("{e}")))?;
        if parsed.choices.is_empty() {
            return Err(UpstreamError::Protocol(format!(
                "no choices in the answer: {}",
                openai::error_message(&bytes)
            )));
        }
        Ok(accumulate::from_whole(parsed))
    }

    async fn read_stream<S: DeltaSink>(
        &self,
        mut resp: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
        acc: &mut accumulate::StreamAccumulator,
        sink: &mut S,
    ) -> Result<(), UpstreamError> {
        let chunk_timeout = self.settings.chunk_timeout;
        let mut parser = SseParser::new();
        let mut done = false;
        let mut finished = false;
        while !done {
            let next = tokio::time::timeout(chunk_timeout, resp.next())
                .await
                .map_err(|_| UpstreamError::Timeout {
                    what: "between two stream chunks",
                    secs: chunk_timeout.as_secs(),
                })?;
            let events = match next {
                None => {
                    let tail: Vec<_> = parser.finish().into_iter().collect();
                    done = true;
                    tail
                }
                Some(Err(e)) => return Err(UpstreamError::Stream(e.to_string())),
                Some(Ok(bytes)) => parser
                    .push(&bytes)
                    .map_err(|e| UpstreamError::Stream(e.to_string()))?,
            };
            for ev in events {
                let data = ev.data.trim();
                if data == "[DONE]" {
                    finish_body(&mut resp).await;
                    return Ok(());
                }
                if data.is_empty() {
                    continue;
                }
                let chunk: ChunkIn = serde_json::from_str(data).map_err(|e| {
                    UpstreamError::Protocol(format!("bad stream chunk ({e}): {data:.200}"))
                })?;
                if let Some(err) = &chunk.error {
                    let message = err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error in stream")
                        .to_string();
                    return Err(UpstreamError::Stream(message));
                }
                if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                    finished = true;
                }
                for d in acc.push(chunk) {
                    sink.delta(d).await;
                }
            }
        }
        // Closed without `[DONE]`: fine if the model had finished, a broken
        // stream otherwise (the answer would be silently cut).
        if finished {
            Ok(())
        } else {
            Err(UpstreamError::Stream(
                "connection closed before the answer ended".into(),
            ))
        }
    }

    /// Sends one request, retrying what is worth retrying; returns a 2xx response.
    async fn send(&self, body: Bytes) -> Result<awc::ClientResponse, UpstreamError> {
        let s = &self.settings;
        let url = format!("{}/chat/completions", s.base_url);
        let client = http_client(s.connect_timeout);
        let mut attempt = 1;
        loop {
            let mut req = client
                .post(&url)
                .timeout(s.response_timeout)
                .insert_header((awc::http::header::CONTENT_TYPE, "application/json"))
                .insert_header((
                    awc::http::header::USER_AGENT,
                    concat!("hermes/", env!("CARGO_PKG_VERSION")),
                ));
            if let Some(key) = &s.api_key {
                req = req.bearer_auth(key);
            }
            let (err, retry_after) = match req.send_body(body.clone()).await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(mut resp) => {
                    let status = resp.status();
                    let retry_after = parse_retry_after(resp.headers());
                    let text = resp
                        .body()
                        .limit(MAX_ERROR_BODY_BYTES)
                        .await
                        .unwrap_or_default();
                    let message = crate::secrets::redact(&openai::error_message(&text));
                    let message = if message.is_empty() {
                        status.canonical_reason().unwrap_or("error").to_string()
                    } else {
                        message
                    };
                    let err = UpstreamError::Status {
                        status: status.as_u16(),
                        message,
                        retry_after,
                    };
                    if !retryable_status(status) {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(e) => {
                    let err = map_send_error(e, &s.base_url, s.response_timeout);
                    if !matches!(err, UpstreamError::Connect { .. }) {
                        return Err(err);
                    }
                    (err, None)
                }
            };
            if attempt >= s.max_attempts {
                return Err(err);
            }
            let wait = match retry_after {
                Some(d) if d > MAX_RETRY_AFTER => return Err(err),
                Some(d) => d,
                None => backoff(attempt),
            };
            log::warn!(
                "upstream attempt {attempt}/{} failed: {err}; retrying in {wait:?}",
                s.max_attempts
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Reads what is left of a stream's body after `[DONE]` (normally only the
/// chunked terminator), so awc hands the connection back to its pool: a
/// response dropped before its end closes the connection.
async fn finish_body(resp: &mut (impl Stream<Item = Result<Bytes, PayloadError>> + Unpin)) {
    let mut left = MAX_TRAILING_BYTES;
    let drain = async {
        while let Some(Ok(bytes)) = resp.next().await {
            left = left.saturating_sub(bytes.len());
            if left == 0 {
                break;
            }
        }
    };
    // Whatever happens here, the answer is complete; only reuse is at stake.
    let _ = tokio::time::timeout(TRAILER_TIMEOUT, drain).await;
}

/// Characters a message puts into the prompt (for usage estimates).
fn message_chars(m: &Message) -> usize {
    let content = match &m.content {
        Some(openai::Content::Text(t)) => t.len(),
        Some(openai::Content::Parts(p)) => p.iter().map(|v| v.to_string().len()).sum(),
        None => 0,
    };
    content
        + m.tool_calls
            .iter()
            .map(|c| c.function.name.len() + c.function.arguments.len())
            .sum::<usize>()
}

/// Forwards a whole completion to a listener as if it had streamed.
async fn forward_whole<S: DeltaSink>(c: &Completion, sink: &mut S) {
    if !c.reasoning.is_empty() {
        sink.delta(Delta::Reasoning(c.reasoning.clone())).await;
    }
    if !c.content.is_empty() {
        sink.delta(Delta::Text(c.content.clone())).await;
    }
}

/// Statuses that mean the model did not process the request (timeouts,
/// rate limits, gateways in front of it). A 500 is not among them: it is
/// usually the server rejecting this very input, and retrying bills again.
fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 502 | 503 | 504)
}

fn map_send_error(
    e: awc::error::SendRequestError,
    base_url: &str,
    timeout: Duration,
) -> UpstreamError {
    use awc::error::SendRequestError as E;
    match e {
        E::Timeout => UpstreamError::Timeout {
            what: "waiting for the response",
            secs: timeout.as_secs(),
        },
        // awc reports a connection closed before the response head as
        // `Disconnected`: the request was written, the server may have
        // started on it, so it is not sent again.
        E::Connect(awc::error::ConnectError::Disconnected) => UpstreamError::Dropped,
        E::Connect(c) => UpstreamError::Connect {
            url: base_url.to_string(),
            reason: c.to_string(),
        },
        // Writing the request failed (typically a pooled connection the
        // server had closed): the server never got a whole request.
        E::Send(io) => UpstreamError::Connect {
            url: base_url.to_string(),
            reason: io.to_string(),
        },
        E::Url(u) => UpstreamError::Connect {
            url: base_url.to_string(),
            reason: format!("invalid URL: {u}"),
        },
        other => UpstreamError::Stream(other.to_string()),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare upstream and ignored).
fn parse_retry_after(h: &awc::http::header::HeaderMap) -> Option<Duration> {
    let v = h.get(awc::http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The wait before retry number `attempt` (1-based): exponential from
/// [`RETRY_BASE_DELAY`] up to [`RETRY_MAX_DELAY`], ±25 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE_DELAY
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(RETRY_MAX_DELAY);
    crate::backoff::jitter(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= RETRY_BASE_DELAY.mul_f64(1.25));
        assert!(backoff(2) >= RETRY_BASE_DELAY.mul_f64(1.5));
        assert!(backoff(30) <= RETRY_MAX_DELAY.mul_f64(1.25));
    }
}
