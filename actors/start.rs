//! What a chat platform gets to start with, and what it hands back: the
//! one interface between the composition root and each platform's actor
//! file. A platform's `start` reads its own configuration section, starts
//! its courier and its actor on the pool, and returns the inbound hooks (if
//! any) the HTTP server must serve for it.

use std::sync::Arc;

use actix::Addr;

use super::hook::InboundHook;
use super::pool::ArbiterPool;
use super::session_router::SessionRouter;
use crate::config::Loaded;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::platform_status::PlatformStatus;

/// Everything a platform needs to start.
#[derive(Clone)]
pub struct PlatformStart {
    pub loaded: Arc<Loaded>,
    pub db: Db,
    pub pool: ArbiterPool,
    pub metrics: Arc<Metrics>,
    /// Where the platform reports its connection state.
    pub status: PlatformStatus,
    /// Where its messages go.
    pub router: Addr<SessionRouter>,
}

/// A started platform.
pub struct Started {
    /// Paths the HTTP server serves for it (webhooks, signed requests).
    pub hooks: Vec<InboundHook>,
}

/// A platform's start function: `None` when it is not configured.
pub type StartFn = fn(&PlatformStart) -> Option<Started>;
