//! `hermes gateway`: the long-running service.

use crate::config::Loaded;

/// Runs the gateway until SIGTERM/SIGINT; returns the exit code.
pub fn run(_loaded: Loaded) -> i32 {
    eprintln!("hermes: the gateway is not built yet");
    1
}
