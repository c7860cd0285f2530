//! A scripted fake of an OpenAI-compatible model server, for tests and the
//! benchmark. Raw HTTP/1.1 over tokio on 127.0.0.1, on its own thread and
//! runtime, so it is independent of the actix system under test.
//!
//! Each `POST …/chat/completions` takes the next [`Reply`] from the script (or
//! asks the responder when the script is empty). Replies can stream text
//! deltas with delays, split tool calls across chunks, send usage, answer
//! with HTTP errors, die mid-stream, or never answer. Every request is
//! recorded, and so is every connection the client closed while the fake was
//! still answering (to check that interrupts really drop the request).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Pending connections the kernel queues for the fake's listener.
const LISTEN_BACKLOG: u32 = 8192;
/// Largest request the fake reads.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// One step of a streamed reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// Wait before the next step.
    Delay(Duration),
    /// Send `data: <json>\n\n`.
    Data(Value),
    /// Send these bytes as they are (comments, broken frames).
    Raw(String),
}

/// How a streamed reply ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// `data: [DONE]` and the chunked terminator.
    Done,
    /// Close the connection abruptly (no `[DONE]`, no terminator).
    Die,
    /// Keep the connection open and send nothing more.
    Hang,
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An SSE stream.
    Stream { steps: Vec<Step>, end: StreamEnd },
    /// A complete response.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
    },
    /// Accept the request and never answer.
    Hang,
    /// Read the request, then close the connection without answering
    /// (a server that crashed while working on it).
    Drop,
}

/// A tool call to script: id, function name, JSON arguments.
#[derive(Debug, Clone)]
pub struct ScriptedCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ScriptedCall {
    /// A call with these parts.
    pub fn new(id: &str, name: &str, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.to_string(),
        }
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id":"chatcmpl-fake","object":"chat.completion.chunk","created":0,"model":"fake",
           "choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
}

fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({"id":"chatcmpl-fake","object":"chat.completion.chunk","created":0,"model":"fake","choices":[],
           "usage":{"prompt_tokens":prompt,"completion_tokens":completion,"total_tokens":prompt+completion}})
}

/// `n` numbered words (`"w0 "`, `"w1 "`, ...): a long answer whose order and
/// completeness a test can check.
pub fn numbered_words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i} ")).collect()
}

impl Reply {
    /// Streams [`numbered_words`]`(n)`, `first` before the first and `gap`
    /// between the others (a slow answer to interrupt, drain or cap).
    pub fn numbered_stream(n: usize, first: Duration, gap: Duration) -> Self {
        let words = numbered_words(n);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        Self::text_stream(&refs, first, gap, (1, n as u64))
    }

    /// Streams `deltas` with `first` before the first and `gap` between the
    /// others, then `finish_reason: stop`, a usage chunk and `[DONE]`.
    pub fn text_stream(deltas: &[&str], first: Duration, gap: Duration, usage: (u64, u64)) -> Self {
        let mut steps = vec![Step::Data(chunk(
            json!({"role":"assistant","content":""}),
            None,
        ))];
        for (i, d) in deltas.iter().enumerate() {
            let wait = if i == 0 { first } else { gap };
            if !wait.is_zero() {
                steps.push(Step::Delay(wait));
            }
            steps.push(Step::Data(chunk(json!({"content": d}), None)));
        }
        steps.push(Step::Data(chunk(json!({}), Some("stop"))));
        steps.push(Step::Data(usage_chunk(usage.0, usage.1)));
        Reply::Stream {
            steps,
            end: StreamEnd::Done,
        }
    }

    /// A stream that sends `deltas` and then ends as `end` says, without a finish.
    pub fn broken_stream(deltas: &[&str], end: StreamEnd) -> Self {
        let mut steps = vec![Step::Data(chunk(json!({"role":"assistant"}), None))];
        steps.extend(
            deltas
                .iter()
                .map(|d| Step::Data(chunk(json!({"content": d}), None))),
        );
        Reply::Stream { steps, end }
    }

    /// A stream asking for tool calls, each call's arguments split into three
    /// pieces and the calls interleaved, as real servers do.
    pub fn tool_stream(calls: &[ScriptedCall], usage: (u64, u64)) -> Self {
        let mut steps = vec![Step::Data(chunk(
            json!({"role":"assistant","content":null}),
            None,
        ))];
        for (i, c) in calls.iter().enumerate() {
            steps.push(Step::Data(chunk(
                json!({"tool_calls":[{"index":i,"id":c.id,"type":"function","function":{"name":c.name,"arguments":""}}]}),
                None,
            )));
        }
        for part in 0..3 {
            for (i, c) in calls.iter().enumerate() {
                let chars: Vec<char> = c.arguments.chars().collect();
                let n = chars.len();
                let piece: String = chars[n * part / 3..n * (part + 1) / 3].iter().collect();
                steps.push(Step::Data(chunk(
                    json!({"tool_calls":[{"index":i,"function":{"arguments":piece}}]}),
                    None,
                )));
            }
        }
        steps.push(Step::Data(chunk(json!({}), Some("tool_calls"))));
        steps.push(Step::Data(usage_chunk(usage.0, usage.1)));
        Reply::Stream {
            steps,
            end: StreamEnd::Done,
        }
    }

    /// A complete (non-streamed) answer.
    pub fn completion(text: &str, finish: &str, usage: (u64, u64)) -> Self {
        Reply::Json {
            status: 200,
            body: json!({"id":"chatcmpl-fake","object":"chat.completion","created":0,"model":"fake",
                "choices":[{"index":0,"message":{"role":"assistant","content":text},"finish_reason":finish}],
                "usage":{"prompt_tokens":usage.0,"completion_tokens":usage.1,"total_tokens":usage.0+usage.1}}),
            headers: Vec::new(),
        }
    }

    /// A complete answer asking for tool calls.
    pub fn tool_completion(calls: &[ScriptedCall], usage: (u64, u64)) -> Self {
        let tcs: Vec<Value> = calls
            .iter()
            .map(|c| json!({"id":c.id,"type":"function","function":{"name":c.name,"arguments":c.arguments}}))
            .collect();
        Reply::Json {
            status: 200,
            body: json!({"id":"chatcmpl-fake","object":"chat.completion","created":0,"model":"fake",
                "choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":tcs},"finish_reason":"tool_calls"}],
                "usage":{"prompt_tokens":usage.0,"completion_tokens":usage.1,"total_tokens":usage.0+usage.1}}),
            headers: Vec::new(),
        }
    }

    /// An OpenAI-style error.
    pub fn error(status: u16, message: &str) -> Self {
        Reply::Json {
            status,
            body: json!({"error":{"message":message,"type":"error","code":null}}),
            headers: Vec::new(),
        }
    }

    /// The same stream without its usage chunk (servers that ignore
    /// `stream_options.include_usage`, as llama-cpp-python does).
    pub fn without_usage(mut self) -> Self {
        if let Reply::Stream { steps, .. } = &mut self {
            steps.retain(|s| !matches!(s, Step::Data(v) if v.get("usage").is_some()));
        }
        if let Reply::Json { body, .. } = &mut self
            && let Some(o) = body.as_object_mut()
        {
            o.remove("usage");
        }
        self
    }

    /// Adds a response header (e.g. `Retry-After`) to a JSON reply.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Json { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub at: Instant,
}

impl Recorded {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    responder: Responder,
    requests: Mutex<VecDeque<Recorded>>,
    /// Requests received in all, kept or not.
    seen: AtomicUsize,
    /// How many of the latest requests `requests` keeps (benchmarks send
    /// hundreds of thousands; keeping them all grew the bench to gigabytes).
    keep: AtomicUsize,
    disconnects: Mutex<Vec<Instant>>,
    connections: AtomicUsize,
}

/// A running fake upstream; stops when dropped.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeUpstream {
    /// Starts with a script; when it runs out, every request gets "ok".
    pub fn start(script: Vec<Reply>) -> Self {
        Self::start_with(script, |_| Reply::completion("ok", "stop", (1, 1)))
    }

    /// Starts with a script, then `responder` for every request after it.
    pub fn start_with(
        script: Vec<Reply>,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_threads(script, Box::new(responder), 1)
    }

    /// As [`FakeUpstream::start_with`], on `threads` runtime worker threads (benchmarks).
    pub fn start_threads(script: Vec<Reply>, responder: Responder, threads: usize) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            responder,
            requests: Mutex::new(VecDeque::new()),
            seen: AtomicUsize::new(0),
            keep: AtomicUsize::new(usize::MAX),
            disconnects: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                // A deep accept queue: benchmarks open thousands of streams at once.
                let listener = tokio::net::TcpSocket::new_v4().and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                    s.listen(LISTEN_BACKLOG)
                });
                let Ok(listener) = listener else {
                    return;
                };
                let _ = addr_tx.send(listener.local_addr().ok());
                let serve = async {
                    while let Ok((sock, _)) = listener.accept().await {
                        let _ = sock.set_nodelay(true);
                        sh.connections.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(connection(sock, sh.clone()));
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)));
        Self {
            addr,
            shared,
            stop: Some(stop_tx),
        }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues more replies.
    pub fn push(&self, reply: Reply) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(reply);
    }

    /// Every request received so far (the latest ones after [`Self::keep_last`]).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Keeps only the latest `n` requests from now on; [`Self::request_count`]
    /// still counts them all.
    pub fn keep_last(&self, n: usize) {
        self.shared.keep.store(n, Ordering::Relaxed);
    }

    /// Requests received so far, kept or not.
    pub fn request_count(&self) -> usize {
        self.shared.seen.load(Ordering::Relaxed)
    }

    /// When the client closed a connection the fake was still answering.
    pub fn disconnects(&self) -> Vec<Instant> {
        self.shared
            .disconnects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Reads one request head and body; `None` when the client closed or sent garbage.
async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<(String, String)>, Vec<u8>)> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let mut tmp = [0u8; 8192];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > MAX_REQUEST_BYTES {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split_whitespace().nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        let mut tmp = [0u8; 65536];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Some((path, headers, body))
}

async fn connection(mut sock: TcpStream, sh: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some((path, headers, body)) = read_request(&mut sock, &mut buf).await {
        let rec = Recorded {
            path: path.clone(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        };
        let reply = if path.ends_with("/chat/completions") {
            let next = sh
                .script
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            next.unwrap_or_else(|| (sh.responder)(&rec))
        } else {
            Reply::error(404, "not found")
        };
        sh.seen.fetch_add(1, Ordering::Relaxed);
        {
            let mut kept = sh.requests.lock().unwrap_or_else(|p| p.into_inner());
            kept.push_back(rec);
            let keep = sh.keep.load(Ordering::Relaxed);
            while kept.len() > keep {
                kept.pop_front();
            }
        }
        let keep_going = match reply {
            Reply::Json {
                status,
                body,
                headers,
            } => {
                let body = body.to_string();
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                sock.write_all(head.as_bytes()).await.is_ok()
            }
            Reply::Hang => {
                wait_for_close(&mut sock, &sh).await;
                false
            }
            Reply::Drop => false,
            Reply::Stream { steps, end } => stream(&mut sock, &sh, steps, end).await,
        };
        if !keep_going {
            return;
        }
    }
}

/// Waits until the client closes the connection and records when.
async fn wait_for_close(sock: &mut TcpStream, sh: &Shared) {
    let mut tmp = [0u8; 1024];
    loop {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    sh.disconnects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Instant::now());
}

async fn write_chunk(sock: &mut TcpStream, data: &str) -> bool {
    let framed = format!("{:x}\r\n{data}\r\n", data.len());
    sock.write_all(framed.as_bytes()).await.is_ok()
}

/// Sends a chunked SSE stream; returns whether the connection can be reused.
async fn stream(sock: &mut TcpStream, sh: &Shared, steps: Vec<Step>, end: StreamEnd) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    for step in steps {
        let ok = match step {
            Step::Delay(d) => {
                // Sleep, but notice a client that goes away meanwhile.
                let mut tmp = [0u8; 1024];
                tokio::select! {
                    _ = tokio::time::sleep(d) => true,
                    r = sock.read(&mut tmp) => !matches!(r, Ok(0) | Err(_)),
                }
            }
            Step::Data(v) => write_chunk(sock, &format!("data: {v}\n\n")).await,
            Step::Raw(s) => write_chunk(sock, &s).await,
        };
        if !ok {
            sh.disconnects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Instant::now());
            return false;
        }
    }
    match end {
        StreamEnd::Done => {
            write_chunk(sock, "data: [DONE]\n\n").await
                && sock.write_all(b"0\r\n\r\n").await.is_ok()
        }
        StreamEnd::Die => {
            let _ = sock.shutdown().await;
            false
        }
        StreamEnd::Hang => {
            wait_for_close(sock, sh).await;
            false
        }
    }
}
