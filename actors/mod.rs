//! Every actor of the gateway, one file each, with the messages it accepts
//! defined beside it. Reading this folder shows the whole concurrent system.
//!
//! - [`agent::AgentActor`]: one per session or HTTP run; runs turns, owns history.
//! - [`response_store::ResponseStoreActor`]: one; stored Responses API responses
//!   (LRU cache in front of the database).
//! - [`session_router::SessionRouter`]: one; chat sessions (session key →
//!   agent), commands, allowlists, busy policy, idle reset, stored history.
//! - [`stream_preview::StreamPreviewActor`]: one per chat answer; types it
//!   out by editing a message, and alone decides when it is delivered.
//! - [`telegram::TelegramActor`]: one when Telegram is configured; the only
//!   thing that talks to the Bot API (polling or webhook, sends, edits).
//! - [`outbox`]: the messages every platform actor accepts (send, edit,
//!   typing) and the platform-neutral handle to them.
//! - [`pool::ArbiterPool`]: the worker threads actors are spread over.

pub mod agent;
pub mod outbox;
pub mod pool;
pub mod response_store;
pub mod session_router;
pub mod stream_preview;
pub mod telegram;
