//! Test doubles shared by the integration tests and the benchmark program.
//! They only ever bind 127.0.0.1.

pub mod fake_telegram;
pub mod fake_upstream;
