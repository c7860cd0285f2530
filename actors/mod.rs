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
//! - [`discord::DiscordActor`]: one when Discord is configured; the only
//!   thing that talks to Discord (the Gateway websocket, REST).
//! - [`native_stream::NativeStreamActor`]: one per chat answer on a platform
//!   with native streaming messages (Slack), in place of the preview.
//! - [`slack::SlackActor`]: one when Slack is configured; the only thing
//!   that talks to Slack (Socket Mode, the Web API).
//! - [`courier::CourierActor`]: one per platform; every outgoing message
//!   (pacing, rate limits, retries, plain-text fallback, metrics).
//! - [`outbox`]: the outgoing messages (send, edit, typing) and the
//!   platform-neutral handle to a courier.
//! - [`command_reply::CommandReply`]: one per slash command; its replies,
//!   through the platform's own channel for them.
//! - [`pool::ArbiterPool`]: the worker threads actors are spread over.
//! - [`hook`]: inbound HTTP hooks (webhooks, signed requests) to platform actors.
//! - [`start`]: what a platform gets to start with and hands back.
//! - [`turn_driver`]: the task (not an actor) that drives one chat turn.

pub mod agent;
pub mod command_reply;
pub mod courier;
pub mod discord;
#[cfg(test)]
pub mod fake_chat;
pub mod hook;
pub mod native_stream;
pub mod outbox;
pub mod pool;
pub mod response_store;
pub mod session_router;
pub mod slack;
pub mod start;
pub mod stream_preview;
pub mod telegram;
pub mod turn_driver;
