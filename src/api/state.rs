//! The state every HTTP worker shares: settings that a reload may replace
//! ([`Live`]), and the long-lived parts handlers use (database, keys,
//! admission, idempotency table, metrics).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::ByteLru;

use super::admission::Admission;
use super::auth::ApiKeys;
use super::idempotency::Idempotency;
use crate::actors::agent::{AgentActor, Interrupt};
use crate::actors::response_store::ResponseStoreActor;
use crate::agent::AgentSettings;
use crate::config::{Loaded, ToolItems, ToolProgress};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::openai::Message;
use crate::platform_status::PlatformStatus;
use crate::platforms::consumer::Leases;
use crate::store::Store;
use crate::upstream::UpstreamSettings;

/// Stateless conversations remembered at most (besides the byte budget).
const PENDING_SESSIONS: usize = 256;

/// Conversations of requests that came without `X-Hermes-Session-Id`, by the
/// fresh id they were given, so a client can opt in to a session from its
/// second turn without every stateless request writing to disk. Written to
/// the database only when a client comes back with that id. Bounded by
/// entries and by bytes (images and tool data count), oldest forgotten first.
#[derive(Clone)]
pub struct PendingSessions {
    inner: Arc<Mutex<ByteLru<String, Vec<Message>>>>,
}

impl PendingSessions {
    /// A table holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ByteLru::new(budget, PENDING_SESSIONS))),
        }
    }

    /// Remembers a conversation under its fresh id (unless it alone is over the budget).
    pub fn put(&self, id: &str, messages: Vec<Message>) {
        let size = id.len() + messages.iter().map(Message::approx_bytes).sum::<usize>();
        self.lock().put(id.to_string(), messages, size);
    }

    /// Takes a remembered conversation (the client opted in).
    pub fn take(&self, id: &str) -> Option<Vec<Message>> {
        self.lock().pop(&id.to_string())
    }

    /// Bytes held (for metrics and tests).
    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByteLru<String, Vec<Message>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Browser origins allowed to call the API.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// From `API_SERVER_CORS_ORIGINS` (`*` allows every origin).
    pub fn new(origins: &[String]) -> Self {
        let any = origins.iter().any(|o| o.trim() == "*");
        let origins = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Self { any, origins }
    }

    /// Whether a browser on `origin` may call.
    pub fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o == &origin.trim_end_matches('/').to_ascii_lowercase())
    }
}

/// Settings a reload may replace; read through [`AppState::live`].
#[derive(Debug, Clone)]
pub struct Live {
    /// The agent settings for API runs, or why there is no upstream.
    pub agent: Result<Arc<AgentSettings>, String>,
    pub model_name: String,
    pub cors: Cors,
    pub tool_progress: ToolProgress,
    /// How the Responses API shows tools the agent ran.
    pub tool_items: ToolItems,
    pub max_body: usize,
    pub metrics_public: bool,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: std::time::Duration,
    /// Time a client has to send its request body.
    pub body_timeout: std::time::Duration,
    /// Admin keys, approvals mode and chat platforms (sessions API, capabilities).
    pub sessions_api: super::sessions_api::Settings,
}

impl Live {
    /// The API's live settings from a loaded configuration.
    pub fn from_loaded(loaded: &Loaded) -> Self {
        let c = &loaded.config;
        let agent = UpstreamSettings::from_config(c).map(|u| {
            Arc::new(crate::agent::AgentSettings::for_front_door(
                loaded,
                "api_server",
                u,
                &c.toolsets_for("api_server"),
            ))
        });
        Self {
            agent,
            model_name: c.api_server.model_name.clone(),
            cors: Cors::new(&c.api_server.cors_origins),
            tool_progress: c.api_server.tool_progress,
            tool_items: c.api_server.responses_tool_items,
            max_body: c.api_server.max_body_bytes,
            metrics_public: c.metrics.public,
            keep_alive: std::time::Duration::from_secs_f64(c.api_server.keep_alive),
            body_timeout: std::time::Duration::from_secs_f64(c.api_server.body_timeout),
            sessions_api: super::sessions_api::Settings::from_config(c),
        }
    }
}

/// What handlers see of the chat side, when a chat platform is configured.
pub struct ChatParts {
    /// Turns and sessions of the chats (health, status line).
    pub stats: Arc<crate::actors::session_router::RouterStats>,
    /// Paths platforms post their events to.
    pub hooks: Vec<crate::actors::hook::InboundHook>,
}

/// The long-lived parts a server is built from.
pub struct Parts {
    pub db: Db,
    /// The storage interface (what has moved behind it; see `store`).
    pub store: Store,
    /// This instance's id, its storage backend and the consumer leases.
    pub leases: Leases,
    pub keys: ApiKeys,
    pub metrics: Arc<Metrics>,
    pub platforms: PlatformStatus,
    pub responses: actix::Addr<ResponseStoreActor>,
    /// Admission limit (0 = unlimited).
    pub max_runs: usize,
    pub chat: Option<ChatParts>,
    /// Bytes of memory for stateless conversations and idempotent results.
    pub session_cache_bytes: usize,
    pub idempotency_cache_bytes: usize,
}

/// Shared by every worker.
pub struct AppState {
    live: RwLock<Arc<Live>>,
    pub db: Db,
    /// The storage interface (what has moved behind it; see `store`).
    pub store: Store,
    /// This instance's id, its storage backend and the consumer leases.
    pub leases: Leases,
    pub keys: ApiKeys,
    pub admission: Admission,
    pub idempotency: Idempotency,
    pub pending: PendingSessions,
    pub metrics: Arc<Metrics>,
    pub platforms: PlatformStatus,
    /// The one owner of stored Responses API responses.
    pub responses: actix::Addr<ResponseStoreActor>,
    /// Unix time the server started (`created` of `/v1/models`).
    pub started_at: u64,
    /// The session router and chat platforms, if any are configured.
    pub chat: Option<ChatParts>,
    draining: AtomicBool,
    /// Session ids with a turn running (one turn at a time per session).
    busy_sessions: Mutex<HashSet<String>>,
    /// Agents of the runs in flight, so a drain can interrupt what is left.
    runs: Mutex<HashMap<u64, actix::Addr<AgentActor>>>,
    next_run: AtomicU64,
    /// Event journals of the stored responses and `/v1/runs` runs going on.
    pub journals: crate::journal::Journals,
    /// The stored responses still running, by id.
    live_responses: Mutex<HashMap<String, super::responses::LiveResponse>>,
    /// The `/v1/runs` runs going on.
    pub api_runs: super::runs::LiveRuns,
}

/// Marks a session busy until dropped (held by the run, streams included).
pub struct OwnedSessionGuard {
    state: actix_web::web::Data<AppState>,
    id: String,
    /// With other instances sharing the store: the session's lease, so a
    /// turn in it runs on one instance at a time.
    lease: Option<crate::platforms::consumer::TurnLease>,
}

impl Drop for OwnedSessionGuard {
    fn drop(&mut self) {
        // The lease is given up first: a next turn here takes it afresh.
        drop(self.lease.take());
        self.state
            .busy_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl AppState {
    /// State for a server.
    pub fn new(live: Live, parts: Parts) -> Self {
        let Parts {
            db,
            store,
            leases,
            keys,
            metrics,
            platforms,
            responses,
            max_runs,
            chat,
            session_cache_bytes,
            idempotency_cache_bytes,
        } = parts;
        let started_at = crate::clock::unix_now();
        Self {
            live: RwLock::new(Arc::new(live)),
            db,
            store,
            leases,
            keys,
            admission: Admission::new(max_runs),
            idempotency: Idempotency::new(idempotency_cache_bytes),
            pending: PendingSessions::new(session_cache_bytes),
            metrics,
            platforms,
            responses,
            started_at,
            chat,
            draining: AtomicBool::new(false),
            busy_sessions: Mutex::new(HashSet::new()),
            runs: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(0),
            journals: crate::journal::Journals::default(),
            live_responses: Mutex::new(HashMap::new()),
            api_runs: super::runs::LiveRuns::default(),
        }
    }

    /// The stored responses still running.
    pub fn lock_live_responses(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, super::responses::LiveResponse>> {
        self.live_responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records a run's agent; returns the id to forget it by.
    pub fn register_run(&self, agent: actix::Addr<AgentActor>) -> u64 {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, agent);
        id
    }

    /// Forgets a finished run.
    pub fn unregister_run(&self, id: u64) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Interrupts every run in flight (end of a drain); returns how many.
    pub fn interrupt_all(&self) -> usize {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        for agent in runs.values() {
            agent.do_send(Interrupt);
        }
        runs.len()
    }

    /// Sessions with a turn running (HTTP) or held in memory (chats).
    pub fn sessions_active(&self) -> usize {
        let http = self
            .busy_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let chat = self.chat.as_ref().map_or(0, |c| {
            c.stats.sessions.load(std::sync::atomic::Ordering::Relaxed)
        });
        http + chat
    }

    /// Agent runs in flight over every front door (HTTP runs and chat turns).
    pub fn runs_in_flight(&self) -> usize {
        let chat = self.chat.as_ref().map_or(0, |c| {
            c.stats.turns.load(std::sync::atomic::Ordering::Relaxed)
        });
        self.admission.running() + chat
    }

    /// The current live settings.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the live settings (configuration reload).
    pub fn set_live(&self, live: Live) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    /// True once shutdown began: new runs are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts refusing new runs.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Claims API session `id` for one turn; `None` when a turn already
    /// runs in it, here or (PostgreSQL) on another instance.
    pub async fn claim_session(
        state: &actix_web::web::Data<Self>,
        id: &str,
    ) -> Result<Option<OwnedSessionGuard>, crate::db::StoreError> {
        {
            let mut set = state
                .busy_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !set.insert(id.to_string()) {
                return Ok(None);
            }
        }
        // Claimed here first: the guard frees it again however this ends.
        let mut guard = OwnedSessionGuard {
            state: state.clone(),
            id: id.to_string(),
            lease: None,
        };
        if state.store.is_shared() {
            match state
                .leases
                .take_for_turn(&format!("session:api:{id}"))
                .await?
            {
                Some(lease) => guard.lease = Some(lease),
                None => return Ok(None),
            }
        }
        Ok(Some(guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{Content, Role};

    #[test]
    fn stateless_conversations_are_bounded_by_bytes_images_included() {
        let budget = 20 * 1024 * 1024;
        let pending = PendingSessions::new(budget);
        let image = format!("data:image/png;base64,{}", "A".repeat(4 * 1024 * 1024));
        for i in 0..50 {
            let m = Message {
                role: Role::User,
                content: Some(Content::Parts(vec![
                    serde_json::json!({"type": "image_url", "image_url": {"url": image}}),
                ])),
                tool_calls: Vec::new(),
                tool_call_id: None,
            };
            pending.put(&format!("s{i}"), vec![m]);
        }
        assert!(pending.bytes() <= budget, "{} bytes", pending.bytes());
        assert!(pending.bytes() > 12 * 1024 * 1024, "recent ones are kept");
        assert!(pending.take("s49").is_some());
        assert!(pending.take("s0").is_none(), "the oldest went first");
    }
}
