//! `POST /v1/chat/completions` body parsing never panics, whatever the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(input) else {
        return;
    };
    let _ = hermes::api::chat_format::parse_request(&body, "hermes-agent");
});
