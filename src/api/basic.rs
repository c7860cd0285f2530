//! The small routes: health and models.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;

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
