//! The processes a benchmark runs: the real `hermes gateway` binary as a
//! child (so its RSS is its own), started against an in-process fake upstream.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key the benchmark gateway accepts.
pub const KEY: &str = "bench-key-0123456789abcdef";
/// How long to wait for the gateway to print its address.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A running gateway child process; killed when dropped.
pub struct Gateway {
    child: Child,
    pub base: String,
    pub pid: u32,
    /// Started under `BENCH_WRAP`: `pid` is the profiler's, which leads a
    /// process group with the gateway in it.
    wrapped: bool,
    /// Spawn to first `/health` 200.
    pub ready_after: Duration,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.wrapped {
            // The profiler writes its data once the gateway is gone, not when
            // killed itself: interrupt the gateway (it drains and exits) and
            // wait for the profiler to finish.
            self.signal(libc::SIGINT);
            let deadline = Instant::now() + START_LIMIT;
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Whatever is left of the group (a profiler that hung).
            // SAFETY: signalling our own child's process group.
            unsafe {
                libc::kill(-(self.pid as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // BENCH_KEEP_LOG=path keeps each gateway's log (path.<pid>) for a post-mortem.
        if let Ok(keep) = std::env::var("BENCH_KEEP_LOG") {
            let log = self
                ._dir
                .path()
                .join(format!("gateway-{}.log", std::process::id()));
            let _ = std::fs::copy(log, format!("{keep}.{}", self.pid));
        }
    }
}

impl Gateway {
    /// Sends `sig` to the gateway itself: when wrapped, the child of the
    /// profiler that runs our binary (a signal to the profiler's group
    /// would also stop the profiler's helpers before they write).
    fn signal(&self, sig: i32) {
        let mut target = self.pid;
        if self.wrapped {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
                    .unwrap_or_default();
            let gateway = children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .find(|c| std::fs::read_link(format!("/proc/{c}/exe")).ok() == Some(hermes_bin()));
            target = gateway.unwrap_or(self.pid);
        }
        // SAFETY: signalling our own child or its child.
        unsafe {
            libc::kill(target as i32, sig);
        }
    }

    /// `HERMES_HOME` of this gateway.
    pub fn home(&self) -> PathBuf {
        self._dir.path().join("home")
    }

    /// Kills it with SIGKILL (a crash: nothing is flushed or finished) and
    /// hands back its directory for a restart.
    pub fn kill(mut self) -> Result<tempfile::TempDir, String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        Ok(std::mem::replace(&mut self._dir, dir))
    }

    /// Stops it with SIGTERM (a clean shutdown checkpoints the database) and
    /// hands back its directory for a restart.
    pub fn stop(mut self) -> Result<tempfile::TempDir, String> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                return Ok(std::mem::replace(&mut self._dir, dir));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err("the gateway did not stop".into())
    }
}

/// The `hermes` binary next to this one.
fn hermes_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("hermes")
}

/// Raises this process's open-file limits (inherited by children): 10 000
/// streams need tens of thousands of sockets across the processes.
pub fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let target = want.max(lim.rlim_cur);
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: target.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            // Not allowed to raise the hard limit: take what there is.
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Starts `hermes gateway` against `upstream` and waits until `/health` answers.
pub async fn start_gateway(
    upstream: Option<&str>,
    extra_env: &[(&str, &str)],
) -> Result<Gateway, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    start_gateway_in(dir, upstream, extra_env).await
}

/// As [`start_gateway`], with `HERMES_HOME` at `dir/home` (kept across restarts).
pub async fn start_gateway_in(
    dir: tempfile::TempDir,
    upstream: Option<&str>,
    extra_env: &[(&str, &str)],
) -> Result<Gateway, String> {
    let log = dir
        .path()
        .join(format!("gateway-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    // A port free a moment ago, so readiness is measured by `/health` alone
    // and not by when the gateway's "listening" log line reaches the file.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // BENCH_WRAP="heaptrack -o /tmp/gw" runs the gateway under a profiler.
    // Its figures then describe the wrapper's process, not the gateway's.
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let (mut cmd, wrapped) = match wrap.next() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.args(wrap).arg(hermes_bin());
            // Its own group, so what is left of it can be cleared at the end.
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            (c, true)
        }
        None => (Command::new(hermes_bin()), false),
    };
    cmd.arg("gateway")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("HERMES_HOME", dir.path().join("home"))
        .env("API_SERVER_PORT", port.to_string())
        .env("API_SERVER_KEY", KEY)
        .env("API_SERVER_MAX_CONCURRENT_RUNS", "0")
        // Production logging: one info line per request, to a file as journald would.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    if let Some(u) = upstream {
        cmd.env("OPENAI_BASE_URL", u)
            .env("HERMES_MODEL", "bench-model");
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let spawned = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", hermes_bin().display()))?;
    let pid = child.id();
    let mut gw = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        pid,
        wrapped,
        ready_after: Duration::ZERO,
        _dir: dir,
    };
    let deadline = spawned + START_LIMIT;
    let client = awc::Client::default();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = gw.child.try_wait() {
            return Err(format!(
                "the gateway exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        if let Ok(r) = client.get(format!("{}/health", gw.base)).send().await
            && r.status() == 200
        {
            gw.ready_after = spawned.elapsed();
            return Ok(gw);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!(
        "the gateway never answered /health: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    ))
}

/// Resident set size of a process in KiB (`VmRSS`), and its peak (`VmHWM`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"))
}

/// One `kB` field of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, ...); 0 if absent.
pub fn status_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time a process has used so far (user + system), in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `) `.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 1000.0 / USER_HZ
}

/// The scripted Python upstream (`bench/upstream.py`), built into this
/// binary so the benchmark runs from anywhere.
const PYTHON_UPSTREAM: &str = include_str!("upstream.py");

/// A running Python upstream child; it stops when its standard input closes
/// (this handle holds it) and is killed when dropped.
pub struct PythonUpstream {
    child: Child,
    pub pid: u32,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PythonUpstream {
    /// Whether `python3` can be run here.
    pub fn available() -> bool {
        Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts it and reads the port it listens on.
    pub fn start() -> Result<Self, String> {
        use std::io::BufRead;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let script = dir.path().join("upstream.py");
        std::fs::write(&script, PYTHON_UPSTREAM).map_err(|e| e.to_string())?;
        // `-I`: no user site-packages or PYTHON* variables change it.
        let mut child = Command::new("python3")
            .arg("-I")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start python3: {e}"))?;
        let pid = child.id();
        let out = child.stdout.take();
        // Built first, so a failure below still stops the child.
        let mut upstream = Self {
            child,
            pid,
            port: 0,
            _dir: dir,
        };
        // The first line is the port. It is read on a thread so that an
        // upstream that never prints cannot hang the benchmark; killing
        // the child (on drop) ends that read.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = out.map(|o| std::io::BufReader::new(o).read_line(&mut line));
            let _ = tx.send((read, line));
        });
        let (read, line) = rx
            .recv_timeout(START_LIMIT)
            .map_err(|_| format!("the Python upstream printed no port within {START_LIMIT:?}"))?;
        if let Some(Err(e)) = read {
            return Err(format!("cannot read the Python upstream's port: {e}"));
        }
        upstream.port = line
            .trim()
            .parse()
            .map_err(|_| format!("the Python upstream did not start (it printed {line:?})"))?;
        Ok(upstream)
    }

    /// Base URL, as the gateway's `OPENAI_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}
