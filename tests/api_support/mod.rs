//! A gateway started in-process on port 0 against a fake upstream, and small
//! HTTP helpers (awc for ordinary requests, raw TCP where a test must control
//! the wire: chunked uploads, disconnects, exact SSE bytes).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hermes::config::{Config, Env, Loaded};
use hermes::sse::{SseEvent, SseParser};
use hermes::testing::fake_upstream::{FakeUpstream, Reply};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The key every test server accepts.
pub const KEY: &str = "test-key-0123456789abcdef";

/// A running gateway.
pub struct App {
    pub addr: SocketAddr,
    pub fake: FakeUpstream,
    pub home: std::path::PathBuf,
    _home_dir: Option<tempfile::TempDir>,
    pub cwd: tempfile::TempDir,
    pub state: actix_web::web::Data<hermes::api::AppState>,
    pub pool: hermes::actors::pool::ArbiterPool,
    handle: actix_web::dev::ServerHandle,
}

impl App {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the bearer key.
    pub fn post(&self, path: &str) -> awc::ClientRequest {
        client()
            .post(self.url(path))
            .bearer_auth(KEY)
            .timeout(Duration::from_secs(30))
    }

    /// POSTs a JSON body with the bearer key.
    pub async fn send(&self, path: &str, body: &Value) -> awc::ClientResponse {
        self.post(path)
            .send_json(body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// A GET with the bearer key.
    pub fn get(&self, path: &str) -> awc::ClientRequest {
        client()
            .get(self.url(path))
            .bearer_auth(KEY)
            .timeout(Duration::from_secs(30))
    }
}

impl App {
    /// Stops the server and waits until it has stopped.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
        self.pool.stop();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let h = self.handle.clone();
        actix_web::rt::spawn(async move { h.stop(false).await });
        self.pool.stop();
    }
}

/// An awc client with no default timeout.
pub fn client() -> awc::Client {
    awc::Client::builder().disable_timeout().finish()
}

/// Starts a gateway whose upstream follows `script`, after `tweak` adjusts the config.
pub async fn spawn_app_with(script: Vec<Reply>, tweak: impl FnOnce(&mut Config)) -> App {
    let fake = FakeUpstream::start(script);
    start(fake, tweak).await
}

/// Starts a gateway with this upstream.
pub async fn start(fake: FakeUpstream, tweak: impl FnOnce(&mut Config)) -> App {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = home.path().to_path_buf();
    start_in(fake, &path, Some(home), tweak).await
}

/// Starts a gateway on an existing home (a restart keeps its state).
pub async fn start_in(
    fake: FakeUpstream,
    home_path: &std::path::Path,
    home: Option<tempfile::TempDir>,
    tweak: impl FnOnce(&mut Config),
) -> App {
    let cwd = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Config::defaults();
    c.model.base_url = Some(fake.url());
    c.model.default = Some("fake-model".into());
    c.model.response_timeout = 5.0;
    c.model.chunk_timeout = 5.0;
    c.terminal.cwd = Some(cwd.path().to_path_buf());
    c.api_server.port = 0;
    c.api_server.key = Some(KEY.into());
    // Several gateways start in this one process (a restart test starts a
    // second on the same home while the first shuts down): each its own id.
    c.storage.instance_id = Some(format!("test-{}", uuid::Uuid::new_v4().simple()));
    c.storage.postgres_url = test_postgres(home_path).await;
    tweak(&mut c);
    c.validate().unwrap_or_else(|e| panic!("{e}"));
    let loaded = Loaded {
        config: c,
        home: home_path.to_path_buf(),
        config_path: home_path.join("config.yaml"),
        config_file_found: false,
        env: Env::default(),
    };
    let running = hermes::gateway::start(&loaded)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let server = running.server.unwrap_or_else(|| panic!("no HTTP server"));
    let handle = server.handle();
    actix_web::rt::spawn(server);
    App {
        addr: running.addr.unwrap_or_else(|| panic!("no HTTP address")),
        fake,
        home: home_path.to_path_buf(),
        _home_dir: home,
        cwd,
        state: running.state,
        pool: running.pool,
        handle,
    }
}

/// With `HERMES_TEST_API_BACKEND=postgres` (`.ci/run` runs the API suites
/// once more so), the database on the test PostgreSQL of the gateway home
/// `home`: a fresh one at its first start, the same one when a test starts
/// a gateway on that home again. `None` (the home's SQLite) otherwise.
async fn test_postgres(home: &std::path::Path) -> Option<String> {
    if std::env::var("HERMES_TEST_API_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    let file = home.join("test-postgres-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let server = hermes::testing::postgres::postgres_url().unwrap_or_else(|| {
        panic!("HERMES_TEST_API_BACKEND=postgres needs HERMES_TEST_POSTGRES_URL")
    });
    let url = hermes::testing::postgres::fresh_postgres_db(&server).await;
    std::fs::write(&file, &url).unwrap_or_else(|e| panic!("{e}"));
    Some(url)
}

/// Whether this run of the suites keeps state in PostgreSQL (tests that
/// look into the home's `state.db` itself apply to SQLite only).
pub fn on_postgres() -> bool {
    std::env::var("HERMES_TEST_API_BACKEND").as_deref() == Ok("postgres")
}

/// A connection to the PostgreSQL database of the gateway home `home`, if
/// it keeps its state there (see [`test_postgres`]).
async fn pg_client(
    home: &std::path::Path,
) -> Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let url = std::fs::read_to_string(home.join("test-postgres-url")).ok()?;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Some((client, task))
}

/// Runs `sql` (statements both dialects take) on the store of the gateway
/// home `home`: its `state.db`, or its PostgreSQL database.
pub async fn exec_sql(home: &std::path::Path, sql: &str) {
    match pg_client(home).await {
        Some((client, task)) => {
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            drop(client);
            let _ = task.await;
        }
        None => rusqlite::Connection::open(home.join("state.db"))
            .and_then(|db| db.execute_batch(sql))
            .unwrap_or_else(|e| panic!("{e}")),
    }
}

/// How many rows `table` holds in the store of the gateway home `home`;
/// -1 when it cannot be read.
pub async fn count_rows(home: &std::path::Path, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let Some((client, task)) = pg_client(home).await else {
        let Ok(db) = rusqlite::Connection::open(home.join("state.db")) else {
            return -1;
        };
        return db.query_row(&sql, [], |r| r.get(0)).unwrap_or(-1);
    };
    let n = match client.query_one(sql.as_str(), &[]).await {
        Ok(row) => row.get(0),
        Err(_) => -1,
    };
    drop(client);
    let _ = task.await;
    n
}

/// Starts a gateway whose upstream follows `script`.
pub async fn spawn_app(script: Vec<Reply>) -> App {
    spawn_app_with(script, |_| {}).await
}

/// Reads a whole body.
pub async fn body(res: &mut awc::ClientResponse) -> Value {
    let b = res.body().limit(64 * 1024 * 1024).await.unwrap_or_default();
    serde_json::from_slice(&b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned()))
}

/// Reads an SSE response to its end; returns the raw text and the events.
pub async fn sse(res: &mut awc::ClientResponse) -> (String, Vec<SseEvent>) {
    use futures_util::StreamExt;
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, res.next()).await {
        match chunk {
            Ok(b) => raw.extend_from_slice(&b),
            Err(_) => break,
        }
    }
    let mut p = SseParser::new();
    let mut events = p.push(&raw).unwrap_or_default();
    events.extend(p.finish());
    (String::from_utf8_lossy(&raw).into_owned(), events)
}

/// The JSON payloads of `data:` events without a name, `[DONE]` excluded.
pub fn chunks(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event.is_none() && e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap_or(Value::Null))
        .collect()
}

/// The concatenated `delta.content` of chunks.
pub fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

/// Sends raw bytes and returns the response head and whatever body arrives
/// within `wait` (raw HTTP for chunked uploads and exact bytes).
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A chat request body.
pub fn chat_body(text: &str, stream: bool) -> Value {
    serde_json::json!({"model": "hermes-agent", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// Opens a raw connection and sends an authenticated JSON POST on it; the
/// caller reads the response and may drop the socket mid-way (a client leaving).
pub async fn raw_post(addr: SocketAddr, path: &str, body: &Value) -> tokio::net::TcpStream {
    raw_post_with(addr, path, body, &[]).await
}

/// As [`raw_post`], with extra request headers.
pub async fn raw_post_with(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> tokio::net::TcpStream {
    let body = body.to_string();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// `(role, text content)` of every message an upstream request carried,
/// the system prompt left out.
pub fn turns(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .map(|m| {
            m.iter()
                .skip(1)
                .map(|x| {
                    (
                        x["role"].as_str().unwrap_or("").to_string(),
                        x["content"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that the parts a long answer was split into, read in order, are
/// the whole answer: each part is rendered Markdown, so paragraphs keep
/// their breaks between parts and trailing spaces go (insignificant in
/// Markdown).
pub fn assert_parts_make_the_answer(parts: &[&str], answer: &str) {
    let shown: Vec<&str> = parts.iter().map(|p| p.trim_end()).collect();
    let expected: Vec<&str> = answer
        .split("\n\n")
        .map(str::trim_end)
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(shown.join("\n\n"), expected.join("\n\n"));
}

/// The API still answers (a chat platform that failed leaves it running).
#[allow(dead_code)]
pub async fn assert_api_still_answers(app: &App) {
    let r = app
        .send(
            "/v1/chat/completions",
            &serde_json::json!({"model": "hermes-agent", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// `/health/detailed`'s entry for one chat platform.
pub async fn platform_health(app: &App, platform: &str) -> Value {
    let mut r = app
        .get("/health/detailed")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v: Value = r.json().await.unwrap_or_default();
    v["platforms"][platform].clone()
}

/// Waits (up to 30 s) until `platform`'s state is `state`; answers its
/// health entry.
pub async fn platform_state_is(app: &App, platform: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = platform_health(app, platform).await;
        if h["state"] == state || tokio::time::Instant::now() >= deadline {
            assert_eq!(h["state"], state, "{h}");
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last user turn of every request the model server saw.
pub fn user_turns(app: &App) -> Vec<String> {
    app.fake
        .requests()
        .iter()
        .filter_map(|r| {
            r.body["messages"]
                .as_array()?
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
                .map(String::from)
        })
        .collect()
}
