//! The OpenAI-compatible HTTP API (actix-web).
//!
//! Routes are thin: they parse, call [`run::Run`] to start an agent run, and
//! frame its events. Every request passes [`edge::edge`] (request id, CORS,
//! auth, security headers, log line). Every error is an [`error::ApiError`]
//! rendered as OpenAI's envelope, including 404 and 405.

pub mod admission;
pub mod auth;
pub mod basic;
pub mod body;
pub mod chat;
pub mod chat_format;
pub mod edge;
pub mod error;
pub mod hooks;
pub mod idempotency;
pub mod remote;
pub mod responses;
pub mod responses_format;
pub mod run;
pub mod runs;
pub mod sampling;
pub mod sessions_api;
pub mod sse_out;
pub mod state;

use std::net::SocketAddr;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, guard, web};

pub use state::AppState;

/// Seconds actix waits for open connections when the server stops; the
/// gateway drains runs itself before stopping the server.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// Pending connections the kernel queues for the listener.
const BACKLOG: u32 = 4096;
/// How long an idle client connection stays open for the client's next
/// request: as long as the reference's server keeps it (aiohttp's 75 s, as
/// nginx). Client pools keep idle connections for 15 s (aiohttp, which Open
/// WebUI uses; awc) and reuse them. A server that closes sooner (actix-web's
/// default is 5 s) races such a client: a request sent as the server closes
/// the connection fails. (The benchmark, whose slices of 5 s matched that
/// timeout, lost one request in 800 000, most likely so.) The rule is that
/// a server keeps idle connections longer than its clients' pools do; 75 s
/// is also longer than load balancers' usual 60 s. The cost: one socket
/// and about 12 KiB per idle connection for up to 75 s (2 000 idle
/// connections measured). A stop does not wait for them: since actix-web
/// 4.14.1 a graceful shutdown closes idle connections at once.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(75);

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(edge::method_not_allowed))
}

/// `GET`, and `HEAD` wherever `GET` works (actix sends the head without the body).
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A query string that does not parse (`?limit=1&limit=2`, wrong types) is
/// a 400 in the error envelope, naming the field when the parser says which.
fn query_error(
    e: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let text = e.to_string();
    let field = text
        .split('`')
        .nth(1)
        .map_or_else(|| "query".to_string(), String::from);
    error::ApiError::invalid(format!("Invalid query string: {text}"), field).into()
}

/// Registers every route.
///
/// Paths with an `{id}` are grouped in one scope per prefix: actix-router
/// compiles a regex for every dynamic path, once per worker, and Unicode
/// classes make each one cost about half a millisecond of start-up; the
/// paths inside a scope are static.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // The hot route first: the router tries resources in order.
    cfg.service(resource("/v1/chat/completions").route(web::post().to(chat::chat_completions)))
        .service(resource("/v1/responses").route(web::post().to(responses::create)))
        .service(
            web::scope("/v1/responses/{id}")
                .service(
                    resource("")
                        .route(get().to(responses::get))
                        .route(web::delete().to(responses::delete)),
                )
                .service(resource("/input_items").route(get().to(responses::input_items)))
                .service(resource("/cancel").route(web::post().to(responses::cancel))),
        )
        .service(resource("/v1/runs").route(web::post().to(runs::create)))
        .service(
            web::scope("/v1/runs/{id}")
                .service(resource("").route(get().to(runs::get)))
                .service(resource("/events").route(get().to(runs::events)))
                .service(resource("/stop").route(web::post().to(runs::stop)))
                .service(resource("/steer").route(web::post().to(runs::steer)))
                .service(resource("/approval").route(web::post().to(runs::approval))),
        )
        .service(resource("/api/sessions").route(get().to(sessions_api::list)))
        .service(
            web::scope("/api/sessions/{id}")
                .service(
                    resource("")
                        .route(get().to(sessions_api::get))
                        .route(web::patch().to(sessions_api::rename))
                        .route(web::delete().to(sessions_api::delete)),
                )
                .service(resource("/chat").route(web::post().to(sessions_api::chat))),
        )
        .service(resource("/v1/capabilities").route(get().to(sessions_api::capabilities)))
        .service(resource("/health").route(get().to(basic::health)))
        .service(resource("/v1/health").route(get().to(basic::health)))
        .service(resource("/v1/models").route(get().to(basic::models)))
        .service(resource("/v1/models/{id}").route(get().to(basic::model)))
        .service(resource("/health/detailed").route(get().to(basic::health_detailed)))
        .service(resource("/metrics").route(get().to(basic::metrics)));
}

/// Binds the server (port 0 picks a free port) and returns it with its address.
/// The returned server must be awaited (or spawned) to run.
pub fn start(
    state: web::Data<AppState>,
    host: &str,
    port: u16,
    workers: usize,
) -> std::io::Result<(Server, SocketAddr)> {
    let hooks: Vec<String> = state
        .chat
        .as_ref()
        .map(|c| c.hooks.iter().map(|h| h.path.clone()).collect())
        .unwrap_or_default();
    let server = HttpServer::new(move || {
        let hooks = hooks.clone();
        App::new()
            .app_data(state.clone())
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(from_fn(edge::edge))
            .configure(routes)
            .configure(move |cfg| {
                for path in hooks {
                    cfg.service(resource(&path).route(web::post().to(hooks::inbound)));
                }
            })
            .default_service(web::to(edge::not_found))
    })
    .workers(workers.max(1))
    // A client that closes its side has left: drop its handler, so the
    // turn's event channel closes and the turn is interrupted.
    .h1_allow_half_closed(false)
    .keep_alive(KEEP_ALIVE)
    // Stream frames are small and must leave at once, not wait for Nagle.
    .tcp_nodelay(true)
    // Bursts of new connections (many clients at once) wait in the kernel
    // instead of being refused.
    .backlog(BACKLOG)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind((host, port))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("the server bound no address"))?;
    Ok((server.run(), addr))
}
