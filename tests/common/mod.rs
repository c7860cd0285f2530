//! Helpers shared by the integration tests: agent settings pointed at a fake
//! upstream, and a runner that collects a turn's events with a time bound.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hermes::actors::agent::{AgentActor, RunTurn};
use hermes::actors::pool::ArbiterPool;
use hermes::agent::{AgentEvent, AgentSettings, EVENT_CHANNEL_CAPACITY, TurnInput, TurnOutcome};
use hermes::config::{Config, Env, Loaded};
use hermes::openai::Message;
use hermes::upstream::UpstreamSettings;

/// No test turn may take longer than this.
pub const TURN_LIMIT: Duration = Duration::from_secs(30);

/// A configuration pointed at `url`, with `home` and `cwd` inside temp dirs.
pub fn config(url: &str, cwd: &Path) -> Config {
    let mut c = Config::defaults();
    c.model.base_url = Some(url.to_string());
    c.model.default = Some("fake-model".into());
    c.model.response_timeout = 5.0;
    c.model.chunk_timeout = 5.0;
    c.terminal.cwd = Some(cwd.to_path_buf());
    c
}

/// Agent settings of a configuration.
pub fn settings(c: Config, home: &Path) -> Arc<AgentSettings> {
    let toolsets = c.toolsets.clone();
    let upstream = UpstreamSettings::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
    let loaded = Loaded {
        config: c,
        home: home.to_path_buf(),
        config_path: home.join("config.yaml"),
        config_file_found: false,
        env: Env::default(),
    };
    Arc::new(hermes::agent::AgentSettings::for_front_door(
        &loaded, "cli", upstream, &toolsets,
    ))
}

/// Temp dirs for a test: (home, cwd).
pub fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A started agent and a way to run turns on it.
pub struct Harness {
    pub pool: ArbiterPool,
    pub agent: actix::Addr<AgentActor>,
}

impl Harness {
    /// An agent with an empty history on a two-arbiter pool.
    pub fn new(settings: Arc<AgentSettings>) -> Self {
        let pool = ArbiterPool::new(Some(2));
        let agent = AgentActor::start_on(&pool, settings, Vec::new());
        Self { pool, agent }
    }

    /// Starts a turn and returns the event receiver.
    pub async fn start(&self, text: &str, stream: bool) -> tokio::sync::mpsc::Receiver<AgentEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let input = TurnInput::new(Message::user(text), None, stream);
        self.agent
            .send(RunTurn { input, events: tx })
            .await
            .unwrap_or_else(|e| panic!("mailbox: {e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        rx
    }

    /// Runs a turn to its end; returns every event before `Finished` and the outcome.
    pub async fn run(&self, text: &str, stream: bool) -> (Vec<AgentEvent>, TurnOutcome) {
        let rx = self.start(text, stream).await;
        collect(rx).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.pool.stop();
    }
}

/// Collects events until `Finished`, failing the test after [`TURN_LIMIT`].
pub async fn collect(
    mut rx: tokio::sync::mpsc::Receiver<AgentEvent>,
) -> (Vec<AgentEvent>, TurnOutcome) {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + TURN_LIMIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("turn did not finish in time; events: {events:?}"))
            .unwrap_or_else(|| panic!("channel closed without Finished; events: {events:?}"));
        match ev {
            AgentEvent::Finished(o) => {
                // Exactly one Finished: nothing may follow it.
                assert!(rx.try_recv().is_err(), "an event followed Finished");
                return (events, *o);
            }
            other => events.push(other),
        }
    }
}

/// The text deltas of a list of events, in order.
pub fn text_of(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}
