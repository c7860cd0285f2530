//! Hermes gateway: one long-running service that lets people reach a
//! tool-using agent from chat platforms and from any OpenAI-compatible client.
//!
//! # Layout
//!
//! - `actors/` (mounted here as [`actors`]): every actor, one file each, with
//!   its messages. The concurrent system at a glance.
//! - [`agent`]: the turn loop and its typed events (no actix).
//! - [`upstream`]: the OpenAI-compatible model client (streaming, retries, fallback).
//! - [`tools`]: the agent's tools, their schemas, caps and refusals.
//! - [`config`]: typed configuration, `.env`, environment precedence.
//! - [`db`]: the embedded SQLite store on its own thread.
//! - [`openai`], [`sse`], [`secrets`]: wire types, SSE parsing, secret masking.
//! - [`api`]: the OpenAI-compatible HTTP API (routes, errors, auth, SSE framing).
//! - [`sessions`], [`metrics`]: stored transcripts; Prometheus metrics.
//! - [`notify`], [`service`]: systemd notifications; the systemd unit.
//! - [`cli`], [`chat`], [`gateway`]: the command line and its commands.
//! - [`testing`]: a scripted fake upstream used by tests and the benchmark.

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
pub mod gateway;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod openai;
pub mod platform_state;
pub mod platform_status;
pub mod platforms;
pub mod response_db;
pub mod secrets;
pub mod service;
pub mod sessions;
pub mod sse;
pub mod testing;
pub mod tools;
pub mod upstream;
