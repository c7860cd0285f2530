//! What every request passes through, in one middleware: request id,
//! CORS (403 for unknown browser origins, 204 preflights), bearer-key auth,
//! security headers on every response (streams included), and one log line.
//!
//! One function rather than a stack of layers: each step is a small helper
//! below, and the order is visible in [`edge`].

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};

use super::error::ApiError;
use super::state::AppState;

/// Routes that need no key.
const PUBLIC_PATHS: &[&str] = &["/health", "/v1/health"];
/// Longest client-supplied request id echoed back.
const MAX_REQUEST_ID_LEN: usize = 128;
/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";
/// Methods a browser may use.
const CORS_METHODS: &str = "GET, POST, DELETE, PATCH, OPTIONS";
/// Headers a browser may send when it does not list its own.
const CORS_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, X-Hermes-Session-Id, X-Hermes-Tool-Progress, \
OpenAI-Organization, OpenAI-Project, OpenAI-Beta, X-Stainless-Arch, X-Stainless-Lang, X-Stainless-OS, \
X-Stainless-Package-Version, X-Stainless-Retry-Count, X-Stainless-Runtime, X-Stainless-Runtime-Version, \
X-Stainless-Timeout, X-Stainless-Helper-Method";
/// Headers a browser script may read.
const CORS_EXPOSE: &str = "x-request-id, X-Hermes-Session-Id";
/// On every response.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// The name of the API key that authenticated a request (request extension).
#[derive(Debug, Clone)]
pub struct KeyName(pub String);

/// The name of the key that authenticated `req` (empty before auth).
pub fn key_name(req: &actix_web::HttpRequest) -> String {
    req.extensions()
        .get::<KeyName>()
        .map(|k| k.0.clone())
        .unwrap_or_default()
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_REQUEST_ID_LEN
                && s.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Adds the headers every response carries.
fn decorate(headers: &mut HeaderMap, rid: &str, cors_origin: Option<&str>) {
    set(headers, "x-request-id", rid);
    for (k, v) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    if let Some(origin) = cors_origin {
        set(headers, "access-control-allow-origin", origin);
        set(headers, "access-control-expose-headers", CORS_EXPOSE);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn preflight(req: &ServiceRequest, origin: &str) -> HttpResponse {
    let allow_headers = req
        .headers()
        .get("access-control-request-headers")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(CORS_HEADERS)
        .to_string();
    let mut res = HttpResponse::NoContent().finish();
    let h = res.headers_mut();
    set(h, "access-control-allow-origin", origin);
    set(h, "access-control-allow-methods", CORS_METHODS);
    set(h, "access-control-allow-headers", &allow_headers);
    set(h, "access-control-max-age", PREFLIGHT_MAX_AGE);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    res
}

/// The middleware.
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let rid = request_id(req.headers());
    let method = req.method().clone();
    let path = req.path().to_string();
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(
            req.into_response(ApiError::internal("application state missing").error_response())
        );
    };
    // One read of the live settings per request.
    let live = state.live();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());

    // CORS: browser requests only; others (no Origin) are unaffected.
    let early = match &origin {
        Some(o) if !live.cors.allows(o) => Some(ApiError::forbidden_origin(o).error_response()),
        Some(o)
            if method == Method::OPTIONS
                && req.headers().contains_key("access-control-request-method") =>
        {
            Some(preflight(&req, o))
        }
        _ => None,
    };
    let cors_origin = origin.as_deref().filter(|o| live.cors.allows(o));

    // Auth (after CORS: a preflight carries no key).
    let mut key_name = String::from("-");
    let early = early.or_else(|| {
        // A platform's inbound hook carries its own secret or signature instead of a key.
        let hook = state
            .chat
            .as_ref()
            .is_some_and(|c| c.hooks.iter().any(|h| h.path == path));
        if PUBLIC_PATHS.contains(&path.as_str())
            || (path == "/metrics" && live.metrics_public)
            || hook
        {
            return None;
        }
        match state.keys.check(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|h| h.as_bytes()),
        ) {
            Some(name) => {
                key_name = name.to_string();
                None
            }
            None => Some(ApiError::unauthorized().error_response()),
        }
    });

    let mut res = match early {
        Some(r) => req.into_response(r),
        None => {
            req.extensions_mut().insert(KeyName(key_name.clone()));
            match next.call(req).await {
                Ok(r) => r.map_into_boxed_body(),
                // Handlers render their own errors; an error escaping here
                // (rare) still leaves in the envelope. The request is gone
                // (routing needs it unshared), so it skips `decorate`.
                Err(e) => {
                    let err = if e.as_response_error().status_code().is_server_error() {
                        log::error!("request {rid} failed: {e}");
                        ApiError::internal("internal error")
                    } else {
                        ApiError::bad_request(e.to_string(), "invalid_request", None)
                    };
                    let response = err.error_response();
                    return Err(actix_web::error::InternalError::from_response(e, response).into());
                }
            }
        }
    };
    decorate(res.headers_mut(), &rid, cors_origin);
    let status = res.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info!(target: "hermes::http", "{method} {path} {status} {ms:.1}ms key={key_name} id={rid}");
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    state.metrics.http_request(route, status, started.elapsed());
    Ok(res)
}

/// 404 in the envelope, for unknown routes.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    ApiError::not_found(
        format!("Unknown route {} {}", req.method(), req.path()),
        "not_found",
    )
    .error_response()
}

/// 405 in the envelope, for known routes with the wrong method.
pub async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    ApiError::method_not_allowed(req.method().as_str(), req.path()).error_response()
}
