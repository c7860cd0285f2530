//! Reading a JSON request body: `Content-Type` must be JSON (415 otherwise,
//! so a web page cannot post a "simple" text/plain request that runs tools),
//! the size limit holds for `Content-Length` and chunked bodies alike (413),
//! a body that does not arrive within `api_server.body_timeout` is a 408
//! (a client sending a byte at a time must not hold a connection forever),
//! and malformed JSON is a clear 400.

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

use super::error::ApiError;
use super::state::Live;

/// True for `application/json` (any charset) and `application/*+json`.
fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads the body as a JSON object within the live size and time limits;
/// returns the raw bytes too (for idempotency hashing).
pub async fn read_json(
    req: &HttpRequest,
    payload: web::Payload,
    live: &Live,
) -> Result<(Value, Bytes), ApiError> {
    let timeout = live.body_timeout;
    match tokio::time::timeout(timeout, read_limited(req, payload, live.max_body)).await {
        Ok(read) => read,
        Err(_) => Err(body_timeout(timeout)),
    }
}

/// 408: the body did not arrive in time.
pub fn body_timeout(timeout: std::time::Duration) -> ApiError {
    ApiError {
        status: actix_web::http::StatusCode::REQUEST_TIMEOUT,
        ..ApiError::bad_request(
            format!(
                "The request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
            "request_timeout",
            None,
        )
    }
}

async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<(Value, Bytes), ApiError> {
    if !is_json(req) {
        return Err(ApiError::unsupported_media_type());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::body_too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8192).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                format!("Cannot read the request body: {e}"),
                "invalid_body",
                None,
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::body_too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    let bytes = buf.freeze();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; send a JSON object",
            "invalid_json",
            None,
        ));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            format!("The request body is not valid JSON: {e}"),
            "invalid_json",
            None,
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object",
            "invalid_json",
            None,
        ));
    }
    Ok((value, bytes))
}
