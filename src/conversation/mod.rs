//! The rules of a chat conversation, as pure logic the session router
//! applies: what a command is ([`commands`]) and how a session moves between
//! idle, busy, queued, reset and stale ([`session`]). No actix, no platform.

pub mod commands;
pub mod session;
