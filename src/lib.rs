//! Hermes gateway: one long-running service that lets people reach a
//! tool-using agent from chat platforms and from any OpenAI-compatible client.
//!
//! # Layout
//!
//! - `actors/` (mounted here as [`actors`]): every actor, one file each, with
//!   its messages. The concurrent system at a glance.
//! - [`agent`]: the turn loop, its typed events, the system prompt, and the
//!   pairing of tool calls with their results (no actix).
//! - [`upstream`]: the OpenAI-compatible model client (streaming, retries,
//!   fallback, usage estimates, sampling parameters).
//! - [`ws`]: reading a chat platform's websocket (whole messages, pings).
//! - [`tools`]: the agent's tools, their schemas, caps and refusals.
//! - [`config`]: typed configuration (schema, environment, validation, loading).
//! - [`store`]: the storage interface, SQLite (default) or PostgreSQL
//!   (several instances), with leases; [`db`]: the embedded SQLite store on
//!   its own thread, with migrations;
//!   [`sessions`], [`response_db`], [`run_db`], [`platform_state`],
//!   [`deliveries`]: what is kept in it; [`journal`]: the numbered events of
//!   responses and runs, replayed to clients that come back.
//! - [`api`]: the OpenAI-compatible HTTP API (routes, errors, auth, SSE
//!   framing, inbound platform hooks).
//! - [`platforms`]: the chat platform layer's shared vocabulary and pure
//!   logic (capabilities, registry, courier, splitting, markup, pacing,
//!   allowlists) and each platform's wire format.
//! - [`conversation`]: chat commands and the session state machine (pure).
//! - [`openai`], [`sse`], [`secrets`]: wire types, SSE parsing, secret masking.
//! - [`cache`], [`memory`], [`backoff`], [`clock`]: byte-bounded LRU,
//!   allocator tuning, one back-off, Unix time.
//! - [`metrics`], [`platform_status`], [`logging`]: Prometheus metrics;
//!   platform link states; log lines written by a thread of their own.
//! - [`notify`], [`service`]: systemd notifications; the systemd unit.
//! - [`cli`], [`chat`], [`gateway`], [`outcome`]: the command line, its
//!   commands, and how a command ended.
//! - [`testing`]: scripted fakes of a model server and of Telegram, used by
//!   tests and the benchmark.

// The actor tree lives in `actors/` at the top level so a reader sees it first.
#[path = "../actors/mod.rs"]
pub mod actors;

pub mod agent;
pub mod api;
pub mod backoff;
pub mod cache;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conversation;
pub mod db;
pub mod deliveries;
pub mod gateway;
pub mod journal;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod openai;
pub mod outcome;
pub mod platform_state;
pub mod platform_status;
pub mod platforms;
pub mod response_db;
pub mod run_db;
pub mod secrets;
pub mod service;
pub mod sessions;
pub mod sse;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tools;
pub mod upstream;
pub mod ws;
