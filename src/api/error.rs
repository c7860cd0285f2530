//! The one error type of the HTTP API, rendered as OpenAI's error envelope:
//! `{"error":{"message","type","param","code"}}` with all four keys present.
//! Every message passes through the secret redactor before it leaves.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::agent::{FailureKind, TurnOutcome};
use crate::secrets;

/// An API error: status, OpenAI `type`, `code`, `param` and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, code: Option<&'static str>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code,
            retry_after: None,
        }
    }

    /// 400 naming the offending field.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message, None)
        }
    }

    /// 400 with a machine-readable code.
    pub fn bad_request(
        message: impl Into<String>,
        code: &'static str,
        param: Option<&str>,
    ) -> Self {
        Self {
            param: param.map(String::from),
            ..Self::new(StatusCode::BAD_REQUEST, message, Some(code))
        }
    }

    /// 401 for a missing or wrong key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Invalid API key",
            Some("invalid_api_key"),
        )
    }

    /// 403 for a browser origin that is not allowed.
    pub fn forbidden_origin(origin: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!("Origin {origin} is not allowed; add it to API_SERVER_CORS_ORIGINS"),
            Some("origin_not_allowed"),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, Some(code))
    }

    /// 405.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} is not allowed on {path}"),
            Some("method_not_allowed"),
        )
    }

    /// 409 for an idempotency key reused with another body.
    pub fn conflict(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(StatusCode::CONFLICT, message, Some(code))
    }

    /// 413.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the {limit}-byte limit"),
            Some("body_too_large"),
        )
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Request bodies must be JSON (Content-Type: application/json)",
            Some("unsupported_media_type"),
        )
    }

    /// 429 at the admission cap.
    pub fn too_many_runs(limit: usize) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many agent runs at once (limit {limit}); retry shortly"),
                Some("rate_limit_exceeded"),
            )
        }
    }

    /// 503 while the gateway shuts down.
    pub fn draining() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The gateway is shutting down; retry in a moment",
                Some("gateway_draining"),
            )
        }
    }

    /// 503 when the gateway instance running the work did not answer.
    pub fn instance_unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                message,
                Some("instance_unavailable"),
            )
        }
    }

    /// 503 when no upstream model is configured.
    pub fn no_upstream(reason: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason, Some("no_upstream"))
    }

    /// 502 for a turn that failed without producing text.
    pub fn agent_failed(reason: &str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            format!("The agent failed: {reason}"),
            Some("agent_failed"),
        )
    }

    /// The answer for a turn that failed without producing text, by why it
    /// failed: the model server's context overflow is the client's input
    /// (400 naming `param`), its rate limit a 429 with its `Retry-After`,
    /// anything else a 502 that must not be retried.
    pub fn turn_failed(outcome: &TurnOutcome, param: &str) -> Self {
        let reason = outcome.error.as_deref().unwrap_or("unknown error");
        match outcome.failure {
            FailureKind::ContextOverflow => Self::bad_request(
                format!("The conversation is too long for the model: {reason}"),
                "context_length_exceeded",
                Some(param),
            ),
            FailureKind::RateLimited { retry_after_secs } => Self {
                retry_after: retry_after_secs.map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("The model server is rate limiting requests: {reason}"),
                    Some("rate_limit_exceeded"),
                )
            },
            FailureKind::Upstream => Self::agent_failed(reason),
        }
    }

    /// Response headers that go with the envelope: `Retry-After` when the
    /// client should come back later; `x-should-retry: false` on a failed
    /// agent turn, because a retry would run the whole turn (tools and their
    /// side effects) again and the SDKs retry 5xx by default.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(s) = self.retry_after {
            h.push(("Retry-After", s.to_string()));
        }
        if self.code == Some("agent_failed") {
            h.push(("x-should-retry", "false".into()));
        }
        h
    }

    /// 500 for what should not happen.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
            Some("internal_error"),
        )
    }

    /// The OpenAI `type` for a status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The envelope as JSON.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": secrets::redact(&self.message),
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.status.as_u16(),
            secrets::redact(&self.message)
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        for h in self.headers() {
            b.insert_header(h);
        }
        b.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_all_four_keys_and_is_redacted() {
        let e = ApiError::agent_failed("upstream said: bad key sk-abcdefghijklmnopqrstuvwx");
        let b = e.body();
        let err = &b["error"];
        for k in ["message", "type", "param", "code"] {
            assert!(err.get(k).is_some(), "{k} missing");
        }
        assert_eq!(err["type"], "server_error");
        assert!(
            !err["message"]
                .as_str()
                .unwrap_or("")
                .contains("abcdefghijklmnop")
        );
        assert_eq!(ApiError::too_many_runs(2).kind(), "rate_limit_error");
        assert_eq!(ApiError::unauthorized().kind(), "invalid_request_error");
    }
}
