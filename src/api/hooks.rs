//! Inbound hooks: the paths chat platforms post their events to (Telegram's
//! webhook; Slack's and Discord's signed requests). Bearer keys do not apply
//! here; each hook's own verifier does (a secret header compared in constant
//! time, a signature over the body). A request is answered 200 only once
//! the platform's actor took it, so the platform redelivers anything we did
//! not take.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;

use super::error::ApiError;
use super::state::AppState;
use crate::actors::hook::{HookDelivery, HookReply, InboundHook};

/// `POST <hook path>`.
pub async fn inbound(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(hook) = state
        .chat
        .as_ref()
        .and_then(|c| c.hooks.iter().find(|h| h.path == req.path()))
    else {
        return Err(ApiError::not_found("No hook here", "not_found"));
    };
    let live = state.live();
    let body = read_body(payload, live.max_body, live.body_timeout).await?;
    deliver(hook, &req, body).await
}

/// Verifies and hands one request to its platform actor.
async fn deliver(
    hook: &InboundHook,
    req: &HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    if !(hook.verify)(req.headers(), &body) {
        log::warn!(
            "{} hook: a request that failed verification was refused",
            hook.platform
        );
        return Err(ApiError::unauthorized());
    }
    let delivery = HookDelivery {
        headers: req.headers().clone(),
        body,
    };
    match hook.sink.send(delivery).await {
        Ok(HookReply::Accepted(v)) => Ok(HttpResponse::Ok().json(v)),
        Ok(HookReply::Malformed(why)) => Err(ApiError::bad_request(why, "invalid_event", None)),
        Ok(HookReply::Failed(why)) => Err(ApiError::internal(why)),
        Err(_) => Err(ApiError::internal(format!(
            "the {} platform is not running",
            hook.platform
        ))),
    }
}

/// The raw body (platforms sign the bytes, so no parsing here), within the
/// size and time limits.
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(format!("Cannot read the body: {e}"), "invalid_body", None)
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::body_too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| Err(super::body::body_timeout(timeout)))
}
