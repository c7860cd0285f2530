//! The Telegram webhook: in webhook mode Telegram posts each update to the
//! path of `telegram.webhook_url` on this server. Bearer keys do not apply
//! here; the mandatory `telegram.webhook_secret` does: Telegram sends it in
//! `X-Telegram-Bot-Api-Secret-Token`, compared in constant time. An update
//! is answered 200 only once the Telegram actor accepted it, so Telegram
//! redelivers anything we did not take.

use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use super::body::read_json;
use super::error::ApiError;
use super::state::AppState;
use crate::actors::telegram::Update;

/// The header Telegram carries the secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// `POST <webhook path>`.
pub async fn telegram(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(hook) = state.chat.as_ref().and_then(|c| c.webhook.as_ref()) else {
        return Err(ApiError::not_found("No webhook here", "not_found"));
    };
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(hook.secret.as_bytes())) {
        log::warn!("telegram webhook: a request without the right secret was refused");
        return Err(ApiError::unauthorized());
    }
    let (update, _) = read_json(&req, payload, &state.live()).await?;
    match hook.telegram.send(Update(update)).await {
        Ok(true) => Ok(HttpResponse::Ok().json(serde_json::json!({"ok": true}))),
        _ => Err(ApiError::internal("the Telegram platform is not running")),
    }
}
