//! The gateway as a service: the systemd unit, sd_notify, graceful drain on
//! SIGTERM, SIGHUP reload, and the health and metrics endpoints. The real
//! binary runs as a child process against the in-process fake upstream.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermes::testing::fake_upstream::{FakeUpstream, Reply, numbered_words};
use serde_json::{Value, json};

const KEY: &str = "service-key-0123456789abcdef";

struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
    home: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
    /// Waits (bounded) for the process to exit; its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Waits (bounded) for `f` to return something.
fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(upstream: &str, config_yaml: &str, env: &[(&str, String)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    spawn_in(dir, upstream, config_yaml, env)
}

/// The gateway with its home in `dir` (kept from an earlier gateway for a
/// restart); each start logs to a file of its own.
fn spawn_in(
    dir: tempfile::TempDir,
    upstream: &str,
    config_yaml: &str,
    env: &[(&str, String)],
) -> Gateway {
    let mut gw = spawn_at(dir.path(), upstream, config_yaml, env);
    gw._dir = Some(dir);
    gw
}

/// The gateway with its home under `root`, which the caller keeps (two
/// gateways may share it).
fn spawn_at(root: &Path, upstream: &str, config_yaml: &str, env: &[(&str, String)]) -> Gateway {
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap_or_default();
    std::fs::write(home.join("config.yaml"), config_yaml).unwrap_or_default();
    let log = root.join(format!("gateway-{}.log", uuid::Uuid::new_v4().simple()));
    let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hermes"));
    cmd.arg("gateway")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("HERMES_HOME", &home)
        .env("API_SERVER_PORT", "0")
        .env("API_SERVER_KEY", KEY)
        .env("OPENAI_BASE_URL", upstream)
        .env("HERMES_MODEL", "fake-model")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let port = eventually(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let pos = text.find("listening on http://127.0.0.1:")?;
        let rest = &text[pos + "listening on http://127.0.0.1:".len()..];
        rest.split('/').next()?.parse::<u16>().ok()
    });
    let port = port.unwrap_or_else(|| {
        panic!(
            "no port in log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    Gateway {
        child,
        port,
        log,
        home,
        _dir: None,
    }
}

fn client() -> awc::Client {
    awc::Client::builder().disable_timeout().finish()
}

#[test]
fn install_print_writes_the_unit_of_the_spec() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hermes"))
            .env_clear()
            .env("HOME", dir.path())
            .env("USER", "alice")
            .env("HERMES_HOME", dir.path().join("hh"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let unit = run(&["gateway", "install", "--print"]);
    let mut section = String::new();
    let mut fields: Vec<(String, String, String)> = Vec::new();
    // systemd's own syntax: blank lines and `#` comments carry no settings.
    for line in unit
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        fields.push((section.clone(), k.to_string(), v.to_string()));
    }
    let get = |s: &str, k: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(a, b, _)| a == s && b == k)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    let bin = std::fs::canonicalize(env!("CARGO_BIN_EXE_hermes")).unwrap_or_default();
    assert_eq!(get("[Unit]", "Description"), vec!["Hermes gateway"]);
    assert_eq!(get("[Unit]", "After"), vec!["network-online.target"]);
    assert_eq!(get("[Unit]", "Wants"), vec!["network-online.target"]);
    assert_eq!(get("[Service]", "Type"), vec!["notify"]);
    assert_eq!(get("[Service]", "NotifyAccess"), vec!["main"]);
    assert_eq!(
        get("[Service]", "ExecStart"),
        vec![format!("{} gateway", bin.display())]
    );
    assert!(Path::new(bin.to_str().unwrap_or("")).is_absolute());
    assert_eq!(
        get("[Service]", "ExecReload"),
        vec!["/bin/kill -HUP $MAINPID"]
    );
    assert_eq!(
        get("[Service]", "Environment"),
        vec![format!("HERMES_HOME={}", dir.path().join("hh").display())]
    );
    assert_eq!(get("[Service]", "Restart"), vec!["always"]);
    assert_eq!(get("[Service]", "RestartSec"), vec!["5"]);
    assert_eq!(get("[Service]", "WatchdogSec"), vec!["30"]);
    assert_eq!(get("[Service]", "OOMPolicy"), vec!["continue"]);
    assert_eq!(get("[Service]", "TimeoutStopSec"), vec!["60"]);
    assert_eq!(get("[Service]", "KillSignal"), vec!["SIGTERM"]);
    assert!(
        get("[Service]", "User").is_empty(),
        "user units have no User="
    );
    assert_eq!(get("[Install]", "WantedBy"), vec!["default.target"]);
    assert_eq!(fields.len(), 15, "exactly the lines above: {unit}");
    assert!(
        !dir.path().join(".config").exists(),
        "--print touches nothing"
    );

    let unit = run(&["gateway", "install", "--system", "--print"]);
    assert!(unit.contains("\nUser=alice\n"), "{unit}");
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");
}

#[test]
fn install_without_systemctl_says_so() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_hermes"))
        .env_clear()
        .env("HOME", dir.path())
        .env("PATH", dir.path()) // no systemctl here
        .env("HERMES_HOME", dir.path().join("hh"))
        .args(["gateway", "install"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("systemctl") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn sd_notify_ready_watchdog_and_stopping() {
    let fake = FakeUpstream::start(vec![]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_default();
    let mut gw = spawn(
        &fake.url(),
        "",
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "300000".into()),
        ],
    );
    let recv = || {
        let mut buf = [0u8; 1024];
        let n = sock.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1\n"), "{first}");
    assert!(first.contains("STATUS=API on 127.0.0.1:"), "{first}");
    // Ready means the port accepts connections.
    assert!(std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_ok());
    let mut pings = 0;
    let started = Instant::now();
    while pings < 3 && started.elapsed() < Duration::from_secs(5) {
        if recv().starts_with("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert_eq!(pings, 3, "watchdog pings every 150 ms");
    gw.signal(libc::SIGTERM);
    let stopping = eventually(Duration::from_secs(5), || {
        Some(recv()).filter(|m| m.starts_with("STOPPING=1"))
    });
    assert!(stopping.is_some(), "no STOPPING=1");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.log()
    );
}

fn stream_body() -> String {
    json!({"model":"hermes-agent","stream":true,"messages":[{"role":"user","content":"hi"}]})
        .to_string()
}

async fn read_stream(res: &mut awc::ClientResponse) -> (String, Vec<Value>) {
    use futures_util::StreamExt;
    let mut raw = Vec::new();
    while let Ok(Some(Ok(b))) = tokio::time::timeout(Duration::from_secs(30), res.next()).await {
        raw.extend_from_slice(&b);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let chunks = text
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    (text, chunks)
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

#[actix_web::test]
async fn sigterm_lets_a_running_stream_finish_and_refuses_new_runs() {
    let words = numbered_words(8);
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(
        8,
        Duration::from_millis(50),
        Duration::from_millis(150),
    )]);
    let mut gw = spawn(&fake.url(), "gateway:\n  drain_timeout: 20\n", &[]);
    let c = client();
    let mut res = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .insert_header(("content-type", "application/json"))
        .send_body(stream_body())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    gw.signal(libc::SIGTERM);
    // A request made during the drain is refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .insert_header(("content-type", "application/json"))
        .send_body(stream_body())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let b: Value = refused.json().await.unwrap_or_default();
    assert_eq!(b["error"]["code"], "gateway_draining");
    // The running stream completes with its proper end.
    let (text, chunks) = read_stream(&mut res).await;
    assert_eq!(content(&chunks), words.concat());
    assert!(text.contains("\"finish_reason\":\"stop\""));
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(15)))
        .await
        .ok()
        .flatten();
    assert_eq!(code, Some(0));
}

#[actix_web::test]
async fn after_the_drain_timeout_streams_end_with_final_frames() {
    let words = numbered_words(200);
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(
        200,
        Duration::from_millis(10),
        Duration::from_millis(100),
    )]);
    let mut gw = spawn(&fake.url(), "gateway:\n  drain_timeout: 0.5\n", &[]);
    let mut res = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .insert_header(("content-type", "application/json"))
        .send_body(stream_body())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gw.signal(libc::SIGTERM);
    let (text, chunks) = read_stream(&mut res).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the stream ended soon after the drain timeout"
    );
    let got = content(&chunks);
    let partial = got
        .strip_suffix(" (interrupted)")
        .unwrap_or_else(|| panic!("the answer is marked interrupted: {got}"));
    assert!(
        !partial.is_empty() && words.concat().starts_with(partial),
        "partial text, in order: {got}"
    );
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(
        finish,
        vec!["stop"],
        "a final chunk ends the answer; `length` would claim the token limit"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(15)))
        .await
        .ok()
        .flatten();
    assert_eq!(code, Some(0));
}

#[actix_web::test]
async fn sighup_applies_a_new_config_and_keeps_the_old_one_when_broken() {
    let fake = FakeUpstream::start(vec![]);
    let gw = spawn(&fake.url(), "api_server:\n  model_name: first-name\n", &[]);
    let c = client();
    let model = || async {
        let mut r = c
            .get(gw.url("/v1/models"))
            .bearer_auth(KEY)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["data"][0]["id"].as_str().map(String::from)
    };
    assert_eq!(model().await.as_deref(), Some("first-name"));
    std::fs::write(
        gw.home.join("config.yaml"),
        "api_server:\n  model_name: second-name\n  cors_origins: [\"http://ui.example\"]\n",
    )
    .unwrap_or_default();
    gw.signal(libc::SIGHUP);
    let mut seen = None;
    for _ in 0..100 {
        seen = model().await;
        if seen.as_deref() == Some("second-name") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.as_deref(), Some("second-name"), "{}", gw.log());
    // The new CORS allowlist took effect without a restart.
    let r = c
        .get(gw.url("/v1/models"))
        .bearer_auth(KEY)
        .insert_header(("Origin", "http://ui.example"))
        .send()
        .await;
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 200);

    std::fs::write(
        gw.home.join("config.yaml"),
        "api_server:\n  model_nam: typo\n",
    )
    .unwrap_or_default();
    gw.signal(libc::SIGHUP);
    let logged = eventually(Duration::from_secs(5), || {
        Some(gw.log()).filter(|l| l.contains("reload rejected"))
    });
    let logged = logged.unwrap_or_else(|| panic!("no rejection logged: {}", gw.log()));
    assert!(logged.contains("model_nam"), "the log names the bad key");
    assert_eq!(
        model().await.as_deref(),
        Some("second-name"),
        "the old configuration is kept"
    );
}

#[actix_web::test]
async fn health_detailed_and_metrics() {
    let fake = FakeUpstream::start(vec![]);
    let gw = spawn(&fake.url(), "", &[]);
    let c = client();
    let r = c
        .get(gw.url("/health/detailed"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401, "detailed health needs the key");
    let mut r = c
        .get(gw.url("/health/detailed"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_s"].as_u64().is_some());
    assert_eq!(v["platforms"], json!({}));
    assert_eq!(v["runs_in_flight"], 0);
    assert_eq!(v["sessions_active"], 0);
    assert_eq!(v["draining"], false);
    assert_eq!(v["deliveries"], json!({"open": 0, "oldest_age_s": 0}));

    let metrics = || async {
        let mut r = c
            .get(gw.url("/metrics"))
            .bearer_auth(KEY)
            .send()
            .await
            .ok()?;
        let b = r.body().await.ok()?;
        Some(String::from_utf8_lossy(&b).into_owned())
    };
    let count = |text: &str, line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = metrics().await.unwrap_or_default();
    for _ in 0..3 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .insert_header(("content-type", "application/json"))
            .send_body(json!({"messages":[{"role":"user","content":"hi"}]}).to_string())
            .await;
        assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 200);
    }
    let after = metrics().await.unwrap_or_default();
    let key = "hermes_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}";
    assert_eq!(count(&after, key) - count(&before, key), 3.0, "{after}");
    let key = "hermes_upstream_requests_total{outcome=\"completed\"}";
    assert_eq!(count(&after, key) - count(&before, key), 3.0, "{after}");
    assert!(
        count(
            &after,
            "hermes_gateway_overhead_seconds_count{route=\"/v1/chat/completions\"}"
        ) >= 3.0
    );
    for name in [
        "hermes_http_request_duration_seconds",
        "hermes_upstream_ttft_seconds",
        "hermes_runs_in_flight",
        "hermes_sse_streams_open",
        // Families with labels (tools, platforms, runs) appear with their
        // first series, as in every Prometheus client.
        "hermes_platform_up",
        "hermes_delivery_obligations_open",
        "hermes_delivery_oldest_age_seconds",
    ] {
        assert!(after.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    let r = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.status(),
        401,
        "metrics need the key unless metrics.public"
    );
    let mut buf = String::new();
    let _ = std::fs::File::open(&gw.log).and_then(|mut f| f.read_to_string(&mut buf));
    assert!(!buf.contains(KEY), "the key never appears in logs");
}

/// Waits (bounded, on the test's runtime) for `f` to return something.
async fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The text of the last message a request to the model server sent.
fn last_text(r: &hermes::testing::fake_upstream::Recorded) -> &str {
    r.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
}

/// Where the gateways of a test keep their durable state: one home's
/// `state.db` (SQLite: gateways on one machine share the home) or one
/// PostgreSQL database (each gateway with a home of its own, as on
/// machines of their own). Fields drop in order: the database's homes last.
struct Shared {
    postgres: Option<String>,
    root: tempfile::TempDir,
}

impl Shared {
    fn sqlite() -> Self {
        Self {
            postgres: None,
            root: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// A fresh database on the test PostgreSQL; `None` (the test is skipped)
    /// without one, unless one is required (`.ci/run`).
    async fn postgres() -> Option<Self> {
        use hermes::testing::postgres::{fresh_postgres_db, postgres_url};
        Some(Self {
            postgres: Some(fresh_postgres_db(&postgres_url()?).await),
            root: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        })
    }

    fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Gateway `id` on this store.
    fn spawn(&self, id: &str, upstream: &str, yaml: &str, env: &[(&str, String)]) -> Gateway {
        let mut env = env.to_vec();
        env.push(("HERMES_INSTANCE_ID", id.to_string()));
        match &self.postgres {
            None => spawn_at(self.root.path(), upstream, yaml, &env),
            Some(url) => {
                env.push(("HERMES_DATABASE_URL", url.clone()));
                spawn_at(&self.root.path().join(id), upstream, yaml, &env)
            }
        }
    }

    /// One number from the store's `sql` (each backend's dialect takes it),
    /// as the gateway `gw` sees the store; `None` when it cannot be read.
    async fn query(&self, gw: &Gateway, sql: &str) -> Option<String> {
        let Some(url) = &self.postgres else {
            let db = rusqlite::Connection::open_with_flags(
                gw.home.join("state.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?;
            return db.query_row(sql, [], |r| r.get(0)).ok();
        };
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        let task = tokio::spawn(conn);
        let v = client.query_one(sql, &[]).await.ok()?.get(0);
        drop(client);
        let _ = task.await;
        v
    }

    /// How many delivery obligations the gateways have open.
    async fn open_deliveries(&self, gw: &Gateway) -> Option<i64> {
        let n = self
            .query(gw, "SELECT CAST(COUNT(*) AS TEXT) FROM deliveries")
            .await?;
        n.parse().ok()
    }

    /// Waits (bounded) for the first message of `tg`'s chat 42 to be typed
    /// out (edited at least once, cursor shown) and for `gw` to have recorded
    /// what it shows in its delivery obligation: the moment a kill -9 tests
    /// recovery from. (The record follows each edit by a moment; killing
    /// before it would test an older state than the one the user saw.)
    async fn typed_and_recorded(
        &self,
        tg: &hermes::testing::fake_telegram::FakeTelegram,
        gw: &Gateway,
    ) -> hermes::testing::fake_telegram::Sent {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let sql = "SELECT current_text FROM deliveries ORDER BY id DESC LIMIT 1";
            if let Some(first) = tg.messages(42).first()
                && first.writes.len() >= 2
                && first.text.ends_with('▌')
                && let Some(recorded) = self.query(gw, sql).await
                && recorded.trim_end() == first.text.trim_end_matches('▌').trim_end()
            {
                return first.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no preview: {:?}\n{}", tg.messages(42), gw.log())
    }
}

#[actix_web::test]
async fn kill_9_mid_answer_then_a_restart_finishes_the_message_and_tells_the_user_once() {
    use hermes::testing::fake_telegram::FakeTelegram;
    const TOKEN: &str = "123456:restart-test-token";
    let tg = FakeTelegram::start(TOKEN);
    let slow = Duration::from_millis(50);
    // 20 s of answer; the second gateway never asks the model again.
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(400, slow, slow)]);
    let env = [
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_string()),
        ("TELEGRAM_API_BASE_URL", tg.url()),
        ("TELEGRAM_ALLOWED_USERS", "42".to_string()),
        ("HERMES_STREAMING_ENABLED", "true".to_string()),
        ("API_SERVER_ENABLED", "true".to_string()),
    ];
    let mut gw = spawn(&fake.url(), "", &env);
    let (_, asked) = tg.push_dm(42, "count to four hundred");
    let shown = Shared::sqlite().typed_and_recorded(&tg, &gw).await;
    gw.signal(libc::SIGKILL);
    let _ = gw.wait_exit(Duration::from_secs(10));
    let dir = gw._dir.take().unwrap_or_else(|| panic!("no dir"));
    drop(gw);
    // What the killed gateway last wrote is what the user saw.
    let before = tg.messages(42);
    let cut = before[0].text.clone();
    assert!(cut.starts_with(shown.text.trim_end_matches('▌').trim_end()));
    let restarted = Instant::now();
    let gw = spawn_in(dir, &fake.url(), "", &env);
    let done = until(Duration::from_secs(30), || {
        let m = tg.messages(42);
        (m.len() >= 2 && m[0].text.ends_with("(interrupted by a restart)")).then_some(m)
    })
    .await
    .unwrap_or_else(|| panic!("not finished: {:?}\n{}", tg.messages(42), gw.log()));
    // Informational (not asserted: this machine is shared): from the
    // restart to the finished message and the notice.
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    let text = cut.trim_end_matches('▌').trim_end();
    assert_eq!(done[0].text, format!("{text} (interrupted by a restart)"));
    assert_eq!(done.len(), 2, "one notice: {done:?}");
    assert!(
        done[1].text.contains("send your message again"),
        "{:?}",
        done[1]
    );
    assert_eq!(done[1].reply_to, Some(asked));
    assert_eq!(fake.requests().len(), 1, "the turn is not re-run");
    // Barrier: the restarted gateway answers; the old turn never comes back.
    assert!(gw.log().contains("finishing 1 answer"), "{}", gw.log());
}

/// `/health/detailed` of a gateway (`Null` when it does not answer).
async fn detailed(gw: &Gateway) -> Value {
    let sent = client()
        .get(gw.url("/health/detailed"))
        .bearer_auth(KEY)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match sent {
        Ok(mut r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

/// Polls a gateway's `/health/detailed` (bounded) until `cond` holds on it.
async fn health_until(gw: &Gateway, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let h = detailed(gw).await;
        if cond(&h) || Instant::now() >= deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn one_of_several_gateways_on_a_home_reads_the_bot_and_a_standby_takes_over_after_kill_9_or_a_stop()
 {
    one_reads_the_bot_and_a_standby_takes_over(Shared::sqlite()).await;
}

#[actix_web::test]
async fn one_of_several_gateways_on_postgres_reads_the_bot_and_a_standby_takes_over_after_kill_9_or_a_stop()
 {
    if let Some(shared) = Shared::postgres().await {
        one_reads_the_bot_and_a_standby_takes_over(shared).await;
    }
}

/// Gateways `gw-a` and `gw-b` on `shared`: `a` reads the bot, `b` stands by
/// and takes over when `a` is killed, under a steady stream of messages;
/// then a stopping `b` hands the bot to `gw-c` at once.
async fn one_reads_the_bot_and_a_standby_takes_over(shared: Shared) {
    use hermes::testing::fake_telegram::FakeTelegram;
    const TOKEN: &str = "123456:lease-test-token";
    let tg = FakeTelegram::start(TOKEN);
    // Each message is answered "re: <its text>".
    let fake = FakeUpstream::start_with(vec![], |r| {
        Reply::completion(&format!("re: {}", last_text(r)), "stop", (1, 1))
    });
    let env = || {
        vec![
            ("TELEGRAM_BOT_TOKEN", TOKEN.to_string()),
            ("TELEGRAM_API_BASE_URL", tg.url()),
            ("TELEGRAM_ALLOWED_USERS", "42".to_string()),
            ("API_SERVER_ENABLED", "true".to_string()),
        ]
    };
    let telegram = |h: &Value| h["platforms"]["telegram"].clone();
    // Each message its own turn, whenever it comes (the default policy
    // interrupts a turn and answers both messages together).
    const QUEUE: &str = "gateway:\n  busy_policy: queue\n";
    let mut a = shared.spawn("gw-a", &fake.url(), QUEUE, &env());
    let h = health_until(&a, Duration::from_secs(30), |h| {
        telegram(h)["state"] == "connected"
    })
    .await;
    assert_eq!(telegram(&h)["lease"]["holder"], "gw-a", "{h}");
    assert_eq!(h["instance"], "gw-a");
    assert_eq!(h["storage"], shared.backend());
    // A second gateway stands by, and says who reads the bot.
    let b = shared.spawn("gw-b", &fake.url(), QUEUE, &env());
    let h = health_until(&b, Duration::from_secs(30), |h| {
        telegram(h)["state"] == "standby"
    })
    .await;
    assert_eq!(telegram(&h)["state"], "standby", "{h}\n{}", b.log());
    assert_eq!(telegram(&h)["lease"]["holder"], "gw-a", "{h}");
    assert_eq!(h["status"], "ok", "standing by is in order: {h}");
    // Messages that come while a turn runs are answered together, in one
    // turn ("m4\n\nm5"): count each message wherever it went.
    let count = |texts: Vec<String>, i: usize| {
        let want = format!("m{i}");
        texts
            .iter()
            .flat_map(|t| t.trim_start_matches("re: ").split("\n\n"))
            .filter(|part| *part == want)
            .count()
    };
    let answers = || tg.messages(42).into_iter().map(|m| m.text).collect();
    let answered = |i: usize| count(answers(), i);
    for i in 0..3 {
        tg.push_dm(42, &format!("m{i}"));
        until(Duration::from_secs(30), || (answered(i) > 0).then_some(()))
            .await
            .unwrap_or_else(|| panic!("m{i} not answered\n{}", a.log()));
    }
    // The two never polled at once (Telegram's 409 for a second poller).
    assert_eq!(tg.conflicts(), 0, "{}\n{}", a.log(), b.log());
    // The holder dies between messages (once it has recorded m2 as
    // delivered: a crash between a send and its record is sent again, at
    // least once); the stream of messages goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.open_deliveries(&a).await != Some(0) {
        assert!(
            Instant::now() < deadline,
            "m2 never recorded as delivered\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal(libc::SIGKILL);
    let _ = a.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    for i in 3..8 {
        tg.push_dm(42, &format!("m{i}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let h = health_until(&b, Duration::from_secs(40), |h| {
        telegram(h)["state"] == "connected"
    })
    .await;
    // Informational (not asserted: this machine is shared; the bench
    // measures it): the spec's bound is 15 s.
    eprintln!("takeover after {:?}", killed.elapsed());
    assert_eq!(telegram(&h)["lease"]["holder"], "gw-b", "{h}\n{}", b.log());
    until(Duration::from_secs(30), || {
        (0..8).all(|i| answered(i) > 0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not all answered: {:?}\n{}", tg.messages(42), b.log()));
    // Nothing lost, nothing handled twice: the model was asked once about
    // each message, and each got one answer.
    let asked: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| {
            r.body["messages"].as_array()?.last()?["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    for i in 0..8 {
        assert_eq!(count(asked.clone(), i), 1, "m{i} asked: {asked:?}");
        assert_eq!(answered(i), 1, "m{i} answered: {:?}", tg.messages(42));
    }

    // A graceful stop gives the lease up at once: a third gateway standing
    // by takes over at its next try, without waiting for the lease to expire.
    let c = shared.spawn("gw-c", &fake.url(), QUEUE, &env());
    health_until(&c, Duration::from_secs(30), |h| {
        telegram(h)["state"] == "standby"
    })
    .await;
    let mut b = b;
    let stopping = Instant::now();
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait_exit(Duration::from_secs(30)), Some(0), "{}", b.log());
    assert!(
        b.log().contains("released the consumer lease"),
        "{}",
        b.log()
    );
    let h = health_until(&c, Duration::from_secs(30), |h| {
        telegram(h)["state"] == "connected"
    })
    .await;
    // Informational, as above (PostgreSQL hears the release at once).
    eprintln!("handover after {:?}", stopping.elapsed());
    assert_eq!(telegram(&h)["lease"]["holder"], "gw-c", "{h}\n{}", c.log());
    tg.push_dm(42, "m8");
    until(Duration::from_secs(30), || (answered(8) > 0).then_some(()))
        .await
        .unwrap_or_else(|| panic!("m8 not answered\n{}", c.log()));
    assert_eq!(answered(8), 1);
}

/// A fake bot, a model that streams a 20 s answer (then says "ok"), and two
/// gateways sharing a store with streaming on: `a` (`gw-a`) reading the
/// bot, `b` (`gw-b`) standing by. Fields drop in order: the gateways before
/// their store.
struct Pair {
    tg: hermes::testing::fake_telegram::FakeTelegram,
    fake: FakeUpstream,
    a: Gateway,
    b: Gateway,
    shared: Shared,
}

async fn holder_and_standby(token: &str, shared: Shared) -> Pair {
    let tg = hermes::testing::fake_telegram::FakeTelegram::start(token);
    let slow = Duration::from_millis(50);
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(400, slow, slow)]);
    let env = || {
        vec![
            ("TELEGRAM_BOT_TOKEN", token.to_string()),
            ("TELEGRAM_API_BASE_URL", tg.url()),
            ("TELEGRAM_ALLOWED_USERS", "42".to_string()),
            ("HERMES_STREAMING_ENABLED", "true".to_string()),
            ("API_SERVER_ENABLED", "true".to_string()),
        ]
    };
    let state = |h: &Value| h["platforms"]["telegram"]["state"].clone();
    let a = shared.spawn("gw-a", &fake.url(), "", &env());
    health_until(&a, Duration::from_secs(30), |h| state(h) == "connected").await;
    let b = shared.spawn("gw-b", &fake.url(), "", &env());
    let h = health_until(&b, Duration::from_secs(30), |h| state(h) == "standby").await;
    assert_eq!(state(&h), "standby", "{h}\n{}", b.log());
    Pair {
        tg,
        fake,
        a,
        b,
        shared,
    }
}

#[actix_web::test]
async fn a_standby_that_takes_over_finishes_the_answer_the_dead_holder_was_typing() {
    standby_finishes_the_dead_holders_answer(Shared::sqlite()).await;
}

#[actix_web::test]
async fn a_standby_on_postgres_finishes_the_answer_the_dead_holder_was_typing() {
    if let Some(shared) = Shared::postgres().await {
        standby_finishes_the_dead_holders_answer(shared).await;
    }
}

async fn standby_finishes_the_dead_holders_answer(shared: Shared) {
    // 20 s of answer; the standby never asks the model again.
    // Every field bound: what `..` leaves out is dropped at once.
    let Pair {
        tg,
        fake,
        mut a,
        b,
        shared,
    } = holder_and_standby("123456:takeover-delivery-token", shared).await;
    let (_, asked) = tg.push_dm(42, "count to four hundred");
    shared.typed_and_recorded(&tg, &a).await;
    a.signal(libc::SIGKILL);
    let _ = a.wait_exit(Duration::from_secs(10));
    let cut = tg.messages(42)[0].text.clone();
    // The standby takes the bot over, and with it the dead holder's answer:
    // the message being typed is finalised, and the user told once.
    let done = until(Duration::from_secs(40), || {
        let m = tg.messages(42);
        (m.len() >= 2 && m[0].text.ends_with("(interrupted by a restart)")).then_some(m)
    })
    .await
    .unwrap_or_else(|| panic!("not finished: {:?}\n{}", tg.messages(42), b.log()));
    let text = cut.trim_end_matches('▌').trim_end();
    assert_eq!(done[0].text, format!("{text} (interrupted by a restart)"));
    assert_eq!(done.len(), 2, "one notice: {done:?}");
    assert_eq!(done[1].reply_to, Some(asked));
    assert_eq!(fake.requests().len(), 1, "the turn is not re-run");
    assert!(b.log().contains("finishing 1 answer"), "{}", b.log());
}

#[actix_web::test]
async fn a_stopping_holder_hands_the_bot_over_at_once_and_finishes_its_own_answer() {
    stopping_holder_hands_over_and_finishes(Shared::sqlite()).await;
}

#[actix_web::test]
async fn a_stopping_holder_on_postgres_hands_the_bot_over_and_finishes_its_own_answer() {
    if let Some(shared) = Shared::postgres().await {
        stopping_holder_hands_over_and_finishes(shared).await;
    }
}

async fn stopping_holder_hands_over_and_finishes(shared: Shared) {
    // 20 s of answer for the first message; "ok" for the rest.
    let Pair {
        tg,
        fake: _fake,
        mut a,
        b,
        shared,
    } = holder_and_standby("123456:drain-handover-token", shared).await;
    let state = |h: &Value| h["platforms"]["telegram"]["state"].clone();
    tg.push_dm(42, "count to four hundred");
    shared.typed_and_recorded(&tg, &a).await;
    // The holder is told to stop mid-answer: the standby reads the bot at
    // once, while the stopping gateway is still typing its answer out.
    a.signal(libc::SIGTERM);
    let h = health_until(&b, Duration::from_secs(30), |h| state(h) == "connected").await;
    assert_eq!(
        h["platforms"]["telegram"]["lease"]["holder"],
        "gw-b",
        "{h}\n{}",
        b.log()
    );
    assert!(
        a.child.try_wait().ok().flatten().is_none(),
        "gw-a still drains"
    );
    let (_, hello) = tg.push_dm(42, "hello");
    until(Duration::from_secs(30), || {
        tg.messages(42)
            .iter()
            .any(|m| m.reply_to == Some(hello) && m.text == "ok")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("hello not answered: {:?}\n{}", tg.messages(42), b.log()));
    // The stopping gateway finishes its answer and exits; the standby left
    // that answer to it (barrier: it says so once the answer is done).
    assert_eq!(a.wait_exit(Duration::from_secs(60)), Some(0), "{}", a.log());
    until(Duration::from_secs(30), || {
        b.log()
            .contains("the answers another gateway was finishing are done")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{}", b.log()));
    let m = tg.messages(42);
    assert_eq!(
        m[0].text,
        numbered_words(400).concat().trim_end(),
        "{:?}",
        m[0]
    );
    assert_eq!(m.len(), 2, "the answer, and the answer to hello: {m:?}");
}

/// Reads an SSE body until `stop` says so or it ends: (event, data, id) per event.
async fn sse_events(
    res: &mut awc::ClientResponse,
    stop: impl Fn(&[(String, Value, Option<u64>)]) -> bool,
) -> Vec<(String, Value, Option<u64>)> {
    use futures_util::StreamExt;
    let (mut raw, mut out) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, res.next()).await {
        raw.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = raw.find("\n\n") {
            let block: String = raw.drain(..end + 2).collect();
            let (mut name, mut data, mut id) = (String::new(), Value::Null, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap_or(Value::Null);
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                }
            }
            if !name.is_empty() {
                out.push((name, data, id));
            }
        }
        if stop(&out) {
            break;
        }
    }
    out
}

#[actix_web::test]
async fn kill_9_mid_run_then_a_restart_ends_responses_and_runs_interrupted_with_every_event() {
    let slow = Duration::from_millis(20);
    let fake = FakeUpstream::start(vec![
        Reply::numbered_stream(2000, slow, slow),
        Reply::numbered_stream(2000, slow, slow),
    ]);
    let mut gw = spawn(&fake.url(), "", &[]);
    let c = client();
    let post = |path: &str| c.post(gw.url(path)).bearer_auth(KEY);
    let mut res = post("/v1/responses")
        .send_json(&json!({"input": "long", "background": true}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r: Value = res.json().await.unwrap_or_default();
    let resp = r["id"].as_str().unwrap_or("").to_string();
    let run_body = json!({"input": "long run"});
    let mut res = post("/v1/runs")
        .insert_header(("Idempotency-Key", "restart-key"))
        .send_json(&run_body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let run: Value = res.json().await.unwrap_or_default();
    let run_id = run["id"].as_str().unwrap_or("").to_string();
    // Barrier: both have produced text, and this reader saw some run events.
    let mut res = c
        .get(gw.url(&format!("/v1/runs/{run_id}/events")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = sse_events(&mut res, |e| e.len() >= 5).await;
    let mut res = c
        .get(gw.url(&format!("/v1/responses/{resp}?stream=true")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sse_events(&mut res, |e| e.len() >= 8).await;
    gw.signal(libc::SIGKILL);
    let _ = gw.wait_exit(Duration::from_secs(10));
    let dir = gw._dir.take().unwrap_or_else(|| panic!("no dir"));
    drop(gw);

    let gw = spawn_in(dir, &fake.url(), "", &[]);
    let get = |path: &str| c.get(gw.url(path)).bearer_auth(KEY);
    let mut res = get(&format!("/v1/responses/{resp}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let obj: Value = res.json().limit(1 << 20).await.unwrap_or_default();
    assert_eq!(obj["status"], "incomplete", "{}", gw.log());
    assert_eq!(obj["incomplete_details"]["reason"], "interrupted");
    assert!(
        obj["output_text"]
            .as_str()
            .unwrap_or("")
            .starts_with("w0 w1 ")
    );
    let mut res = get(&format!("/v1/responses/{resp}?stream=true"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events = sse_events(&mut res, |_| false).await;
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| e.1["sequence_number"].as_u64())
        .collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("response.incomplete")
    );

    let mut res = get(&format!("/v1/runs/{run_id}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r: Value = res.json().await.unwrap_or_default();
    assert_eq!(r["status"], "interrupted", "{r}");
    let last_seen = seen.last().and_then(|e| e.2).unwrap_or(0);
    let mut res = get(&format!("/v1/runs/{run_id}/events"))
        .insert_header(("Last-Event-ID", last_seen.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rest = sse_events(&mut res, |_| false).await;
    assert_eq!(
        rest.first().and_then(|e| e.2),
        Some(last_seen + 1),
        "the same ids after the restart"
    );
    assert_eq!(rest.last().map(|e| e.0.as_str()), Some("run.interrupted"));
    // The idempotency key outlived the process too.
    let mut res = c
        .post(gw.url("/v1/runs"))
        .bearer_auth(KEY)
        .insert_header(("Idempotency-Key", "restart-key"))
        .send_json(&run_body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 202);
    let again: Value = res.json().await.unwrap_or_default();
    assert_eq!(again["id"].as_str(), Some(run_id.as_str()));
    assert_eq!(fake.requests().len(), 2, "nothing is run again");
}

/// POSTs `body` to `path` on `gw`; status and JSON body.
async fn post_json(gw: &Gateway, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = client().post(gw.url(path)).bearer_auth(KEY);
    if let Some(k) = key {
        req = req.insert_header(("Idempotency-Key", k));
    }
    let mut res = req.send_json(body).await.unwrap_or_else(|e| panic!("{e}"));
    let v: Value = res.json().limit(1 << 20).await.unwrap_or_default();
    (res.status().as_u16(), v)
}

/// GETs `path` on `gw` (with the key), its body left to read.
async fn open_get(gw: &Gateway, path: &str) -> awc::ClientResponse {
    client()
        .get(gw.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// GETs `path` on `gw`; status and JSON body.
async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let mut res = open_get(gw, path).await;
    let v: Value = res.json().limit(1 << 20).await.unwrap_or_default();
    (res.status().as_u16(), v)
}

#[actix_web::test]
async fn gateways_on_postgres_serve_each_others_responses_and_runs_and_end_a_dead_ones_work() {
    let Some(shared) = Shared::postgres().await else {
        return;
    };
    // "long run" streams for a long while; anything else is answered
    // "re: <the last message>".
    let slow = Duration::from_millis(20);
    let fake = FakeUpstream::start_with(vec![], move |r| match last_text(r) {
        "long run" | "stop me" | "background" => Reply::numbered_stream(2000, slow, slow),
        "steer me" => Reply::numbered_stream(150, slow, slow),
        "and then stop" => Reply::completion("Steered.", "stop", (1, 1)),
        last => Reply::completion(&format!("re: {last}"), "stop", (1, 1)),
    });
    let mut a = shared.spawn("gw-a", &fake.url(), "", &[]);
    let b = shared.spawn("gw-b", &fake.url(), "", &[]);
    let h = detailed(&b).await;
    assert_eq!(
        (h["instance"].as_str(), h["storage"].as_str()),
        (Some("gw-b"), Some("postgres"))
    );

    // Created on one, read and chained on the other.
    let (s, first) = post_json(&a, "/v1/responses", &json!({"input": "one"}), None).await;
    assert_eq!(s, 200, "{first}");
    let id1 = first["id"].as_str().unwrap_or_default().to_string();
    let (s, got) = get_json(&b, &format!("/v1/responses/{id1}")).await;
    assert_eq!(
        (s, got["output_text"].as_str()),
        (200, Some("re: one")),
        "{got}"
    );
    let (s, second) = post_json(
        &b,
        "/v1/responses",
        &json!({"input": "two", "previous_response_id": id1}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{second}");
    let asked = &fake.requests()[1].body["messages"];
    let texts: Vec<&str> = asked
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] != "system")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(texts, vec!["one", "re: one", "two"], "{asked}");
    // Deleted on one: the other (which has it cached) no longer serves it.
    let (s, _) = get_json(&a, &format!("/v1/responses/{id1}")).await;
    assert_eq!(s, 200);
    let mut res = client()
        .delete(b.url(&format!("/v1/responses/{id1}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let _ = res.body().await;
    assert_eq!(get_json(&a, &format!("/v1/responses/{id1}")).await.0, 404);

    // One turn at a time in a session, whichever instance it reaches.
    let chat = |text: &str, stream: bool| json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]});
    let mut long = client()
        .post(a.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .insert_header(("X-Hermes-Session-Id", "shared-session"))
        .send_json(&chat("steer me", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = futures_util::StreamExt::next(&mut long).await;
    assert!(matches!(first, Some(Ok(_))), "the turn runs on a");
    let in_session = |gw: &Gateway, text: &str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .insert_header(("X-Hermes-Session-Id", "shared-session"))
            .send_json(&chat(text, false))
    };
    let mut busy = in_session(&b, "meanwhile")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e: Value = busy.json().await.unwrap_or_default();
    assert_eq!(
        (busy.status().as_u16(), e["error"]["code"].as_str()),
        (409, Some("session_busy")),
        "{e}"
    );
    let _ = long.body().limit(1 << 20).await;
    // Free once the turn on `a` ended (its lease is released as it ends).
    let mut freed = false;
    for _ in 0..50 {
        let mut after = in_session(&b, "after")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = after.body().await;
        if after.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the session stayed busy after its turn\n{}", a.log());

    // Runs and responses on `a` are steered, stopped and cancelled through
    // `b`, which passes each request on to `a`.
    let (s, run) = post_json(&a, "/v1/runs", &json!({"input": "steer me"}), None).await;
    assert_eq!(s, 202, "{run}");
    let steered = run["id"].as_str().unwrap_or_default().to_string();
    let mut res = open_get(&b, &format!("/v1/runs/{steered}/events")).await;
    sse_events(&mut res, |e| e.iter().any(|e| e.0 == "message.delta")).await;
    let (_, now) = get_json(&b, &format!("/v1/runs/{steered}")).await;
    assert!(
        now["output_text"].as_str().unwrap_or("").starts_with("w0"),
        "{now}"
    );
    let path = format!("/v1/runs/{steered}/steer");
    let (s, body) = post_json(&b, &path, &json!({"input": "and then stop"}), None).await;
    assert_eq!(s, 202, "{body}\n{}", b.log());
    let done = sse_events(&mut res, |e| e.iter().any(|e| e.0 == "run.completed")).await;
    assert_eq!(done.last().map(|e| e.0.as_str()), Some("run.completed"));
    let (_, r) = get_json(&b, &format!("/v1/runs/{steered}")).await;
    assert_eq!(r["output_text"], "Steered.", "{r}");
    let (s, e) = post_json(&b, &path, &json!({"input": "late"}), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("run_not_running"))
    );

    let (_, run) = post_json(&a, "/v1/runs", &json!({"input": "stop me"}), None).await;
    let stopped = run["id"].as_str().unwrap_or_default().to_string();
    let mut res = open_get(&b, &format!("/v1/runs/{stopped}/events")).await;
    sse_events(&mut res, |e| e.iter().any(|e| e.0 == "message.delta")).await;
    let (s, r) = post_json(&b, &format!("/v1/runs/{stopped}/stop"), &json!({}), None).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("cancelled")), "{r}");

    let body = json!({"input": "background", "background": true});
    let (_, resp) = post_json(&a, "/v1/responses", &body, None).await;
    let bg = resp["id"].as_str().unwrap_or_default().to_string();
    let mut res = open_get(&b, &format!("/v1/responses/{bg}?stream=true")).await;
    sse_events(&mut res, |e| {
        e.iter().any(|e| e.0 == "response.output_text.delta")
    })
    .await;
    let (_, now) = get_json(&b, &format!("/v1/responses/{bg}")).await;
    assert_eq!(now["status"], "in_progress", "{now}");
    let (s, r) = post_json(&b, &format!("/v1/responses/{bg}/cancel"), &json!({}), None).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("cancelled")), "{r}");

    // A run started on `a`, watched through `b` as it goes.
    let run_body = json!({"input": "long run"});
    let (s, run) = post_json(&a, "/v1/runs", &run_body, Some("shared-key")).await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["id"].as_str().unwrap_or_default().to_string();
    let mut watch = open_get(&b, &format!("/v1/runs/{run_id}/events")).await;
    let seen = sse_events(&mut watch, |e| e.len() >= 5).await;
    assert_eq!(seen.first().map(|e| e.0.as_str()), Some("run.started"));
    let ids: Vec<u64> = seen.iter().filter_map(|e| e.2).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "in order, none missed"
    );
    // The same key on the other instance names the same run.
    let (s, again) = post_json(&b, "/v1/runs", &run_body, Some("shared-key")).await;
    assert_eq!((s, again["id"].as_str()), (202, Some(run_id.as_str())));

    // A background response on `a` too, running when `a` dies.
    let body = json!({"input": "background", "background": true});
    let (_, resp) = post_json(&a, "/v1/responses", &body, None).await;
    let cut = resp["id"].as_str().unwrap_or_default().to_string();

    // `a` dies mid-run: `b` ends the run as interrupted once `a`'s presence
    // runs out, and the reader following it through `b` sees that end.
    a.signal(libc::SIGKILL);
    let _ = a.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    // Until then, what must reach `a` cannot: 503, after the 5 s wait (its
    // presence lasts at least 7 s more: renewed every 3 s for 10 s).
    let steer = format!("/v1/runs/{run_id}/steer");
    let (s, e) = post_json(&b, &steer, &json!({"input": "hello?"}), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (503, Some("instance_unavailable")),
        "{e}"
    );
    let rest = sse_events(&mut watch, |e| e.iter().any(|e| e.0 == "run.interrupted")).await;
    eprintln!("the dead gateway's run ended after {:?}", killed.elapsed());
    assert_eq!(
        rest.last().map(|e| e.0.as_str()),
        Some("run.interrupted"),
        "{}",
        b.log()
    );
    let (_, r) = get_json(&b, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(
        r["output_text"]
            .as_str()
            .unwrap_or("")
            .starts_with("w0 w1 "),
        "{r}"
    );
    let runs_asked = fake
        .requests()
        .iter()
        .filter(|q| q.body.to_string().contains("long run"))
        .count();
    assert_eq!(runs_asked, 1, "nothing is run twice");
    // The response it was running ends incomplete (interrupted) too.
    let mut ended = Value::Null;
    for _ in 0..100 {
        ended = get_json(&b, &format!("/v1/responses/{cut}")).await.1;
        if ended["status"] != "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ended["status"], "incomplete", "{ended}");
    assert_eq!(
        ended["incomplete_details"]["reason"], "interrupted",
        "{ended}"
    );
}
