//! The small routes: health and models.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use crate::platform_status::LinkState;

/// `GET /health`, `GET /v1/health` (no auth).
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(
        json!({"status": "ok", "platform": "hermes-agent", "version": env!("CARGO_PKG_VERSION")}),
    )
}

fn model_object(state: &AppState, id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": state.started_at, "owned_by": "hermes"})
}

/// `GET /v1/models`.
pub async fn models(state: web::Data<AppState>) -> HttpResponse {
    let name = state.live().model_name.clone();
    HttpResponse::Ok().json(json!({"object": "list", "data": [model_object(&state, &name)]}))
}

/// `GET /v1/models/{id}`.
pub async fn model(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = state.live().model_name.clone();
    if *id != name {
        return Err(ApiError::not_found(
            format!("The model `{id}` does not exist; this server offers `{name}`"),
            "model_not_found",
        ));
    }
    Ok(HttpResponse::Ok().json(model_object(&state, &name)))
}

/// `GET /health/detailed` (auth): state of the gateway and its platforms.
pub async fn health_detailed(state: web::Data<AppState>) -> HttpResponse {
    let now = crate::clock::unix_now();
    let platforms = state.platforms.snapshot();
    // A platform another instance reads is in order: this one stands by.
    let degraded = state.is_draining()
        || platforms
            .values()
            .any(|p| !matches!(p.state, LinkState::Connected | LinkState::Standby));
    let (open, oldest) = state.metrics.deliveries.summary(now);
    HttpResponse::Ok().json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "instance": state.leases.instance(),
        "storage": state.leases.backend(),
        "uptime_s": now.saturating_sub(state.started_at),
        "platforms": platforms,
        "runs_in_flight": state.runs_in_flight(),
        "sessions_active": state.sessions_active(),
        "draining": state.is_draining(),
        "deliveries": {"open": open, "oldest_age_s": oldest},
    }))
}

/// `GET /metrics` (auth unless `metrics.public`): OpenMetrics for scrapers
/// that ask for it (Prometheus does), else the Prometheus text format.
pub async fn metrics(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let openmetrics = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let text = state.metrics.render(&state.platforms.snapshot());
    if openmetrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text)
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(crate::metrics::to_prometheus_text(&text))
    }
}
