//! Inbound hooks: how a platform that pushes its events over HTTP (Telegram's
//! webhook; Slack's and Discord's signed requests later) reaches its actor.
//! A platform hands the HTTP server an [`InboundHook`] (a path, a verifier
//! for the request's signature or secret, and its actor as the sink); the
//! server checks, forwards the body as a [`HookDelivery`], and answers with
//! what the actor says. Bearer keys do not apply to these paths.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::http::header::HeaderMap;
use bytes::Bytes;

/// Decides whether a request really comes from the platform (a secret
/// header, a signature over the body).
pub type Verifier = Arc<dyn Fn(&HeaderMap, &[u8]) -> bool + Send + Sync>;

/// One verified request for a platform actor.
/// Sent by: the HTTP server's hook route.
#[derive(Message)]
#[rtype(result = "HookReply")]
pub struct HookDelivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the hook route answers the platform.
#[derive(Debug, Clone, PartialEq, MessageResponse)]
pub enum HookReply {
    /// Taken (200, with this JSON body).
    Accepted(serde_json::Value),
    /// Not taken: the platform should deliver it again (500 with the reason).
    Failed(String),
    /// Malformed (400 with the reason): delivering it again will not help.
    Malformed(String),
}

/// A path on the HTTP server that feeds a platform actor.
#[derive(Clone)]
pub struct InboundHook {
    /// The platform's registry name (logs).
    pub platform: &'static str,
    /// The URL path, e.g. `/tg/hook`.
    pub path: String,
    pub verify: Verifier,
    pub sink: Recipient<HookDelivery>,
}

/// The path part of a public URL (`https://bot.example.com/tg/hook` → `/tg/hook`).
pub fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..]
            .split(['?', '#'])
            .next()
            .unwrap_or("/")
            .to_string(),
        None => "/".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_urls() {
        assert_eq!(url_path("https://bot.example.com/tg/hook?x=1"), "/tg/hook");
        assert_eq!(url_path("https://bot.example.com"), "/");
    }
}
