//! The systemd notification protocol (`sd_notify`): `READY=1`, `WATCHDOG=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=…`, sent as datagrams to the Unix
//! socket named by `NOTIFY_SOCKET`. Without that variable every call is a
//! no-op, so the gateway runs the same with or without systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::config::Env;

/// Where notifications go; `None` when not started by systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env(env: &Env) -> Self {
        let socket = env.get("NOTIFY_SOCKET").map(String::from);
        let pid_ok = env
            .get("WATCHDOG_PID")
            .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = env
            .get("WATCHDOG_USEC")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && pid_ok)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, as systemd advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends a notification (several `KEY=VALUE` lines); errors are logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some(path) = &self.socket else { return };
        let sock = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("sd_notify: cannot create a socket: {e}");
                return;
            }
        };
        let result = if let Some(name) = path.strip_prefix('@') {
            // Abstract namespace socket.
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
        } else {
            sock.send_to(message.as_bytes(), path)
        };
        if let Err(e) = result {
            log::warn!("sd_notify to {path} failed: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `WATCHDOG=1` with a status line.
    pub fn watchdog(&self, status: &str) {
        self.send(&format!("WATCHDOG=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` (followed by `ready` when done).
    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading configuration");
    }

    /// `STOPPING=1`.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_and_is_silent_without_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let env = Env::from_pairs([
            ("NOTIFY_SOCKET", path.to_string_lossy().to_string()),
            ("WATCHDOG_USEC", "2000000".to_string()),
        ]);
        let n = Notifier::from_env(&env);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        n.ready("up");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
        Notifier::from_env(&Env::default()).ready("nobody listens");
        let other_pid = Env::from_pairs([("WATCHDOG_USEC", "1000"), ("WATCHDOG_PID", "1")]);
        assert_eq!(Notifier::from_env(&other_pid).watchdog_interval(), None);
    }
}
