//! Several instances on one PostgreSQL (`scale-out.md`): what a second
//! gateway instance adds to API throughput.
//!
//! Needs a PostgreSQL server: `eval "$(tests/postgres/start.sh)"` starts a
//! throwaway one and sets `HERMES_TEST_POSTGRES_URL`, which this scenario
//! reads (each configuration gets a fresh database on it).

use std::collections::BTreeMap;
use std::time::Duration;

use hermes::testing::fake_upstream::Reply;

use super::load::{self, Target};
use super::{Figures, Plan, load_fake, procs};

/// Clients sending back-to-back, split evenly between the instances.
const WORKERS: usize = 32;

/// The stored Responses API request every client sends: each one is a
/// write of the response and its events, and a read of nothing.
fn responses_body() -> String {
    serde_json::json!({"model": "hermes-agent", "input": "hi"}).to_string()
}

/// `/v1/responses` of `gw`.
fn target(gw: &procs::Gateway, path: &str) -> Target {
    Target {
        url: format!("{}{path}", gw.base),
        key: Some(procs::KEY.into()),
        client: load::client(),
    }
}

/// Requests per second the `gateways` sustain together, all clients
/// running back-to-back for `secs`; fails on any failed request.
async fn throughput(
    gateways: &[procs::Gateway],
    path: &str,
    body: &str,
    secs: u64,
) -> Result<f64, String> {
    let targets: Vec<Target> = gateways.iter().map(|g| target(g, path)).collect();
    // Warm up every instance (connections, pools, caches).
    for t in &targets {
        load::closed_loop(t, body, 4, Duration::from_millis(300)).await;
    }
    let each = WORKERS / targets.len();
    let runs = targets
        .iter()
        .map(|t| load::closed_loop(t, body, each, Duration::from_secs(secs)));
    let mut all = load::Tally::default();
    for tally in futures_util::future::join_all(runs).await {
        all.add(tally);
    }
    if all.failed() > 0 {
        return Err(format!(
            "{} of {} requests failed on {path}: {}",
            all.failed(),
            all.requests,
            all.reasons()
        ));
    }
    Ok(all.requests as f64 / secs as f64)
}

/// `HERMES_DATABASE_URL` of a fresh database on the test server.
async fn fresh_database() -> Result<String, String> {
    let server = std::env::var("HERMES_TEST_POSTGRES_URL")
        .map_err(|_| "needs a PostgreSQL: eval \"$(tests/postgres/start.sh)\" first".to_string())?;
    Ok(hermes::testing::postgres::fresh_postgres_db(&server).await)
}

pub async fn two_instances(p: &Plan) -> Result<Figures, String> {
    let fake = load_fake(Box::new(|_| Reply::completion("ok", "stop", (10, 1))));
    let secs = p.max_secs;
    let body = responses_body();
    let chat = super::chat("hi", false);
    let mut figures = BTreeMap::new();

    // One instance on its own SQLite: the default, for reference.
    let solo = procs::start_gateway(Some(&fake.url()), &[]).await?;
    figures.insert(
        "responses_sqlite_one_rps",
        throughput(std::slice::from_ref(&solo), "/v1/responses", &body, secs).await?,
    );
    drop(solo);

    // One, then two instances on one PostgreSQL database.
    let url = fresh_database().await?;
    let env = |id: &'static str| {
        [
            ("HERMES_DATABASE_URL", url.as_str()),
            ("HERMES_INSTANCE_ID", id),
        ]
    };
    let a = procs::start_gateway(Some(&fake.url()), &env("bench-a")).await?;
    let one = throughput(std::slice::from_ref(&a), "/v1/responses", &body, secs).await?;
    let chat_one = throughput(
        std::slice::from_ref(&a),
        "/v1/chat/completions",
        &chat,
        secs,
    )
    .await?;
    let b = procs::start_gateway(Some(&fake.url()), &env("bench-b")).await?;
    let pair = [a, b];
    let two = throughput(&pair, "/v1/responses", &body, secs).await?;
    let chat_two = throughput(&pair, "/v1/chat/completions", &chat, secs).await?;
    figures.insert("responses_pg_one_rps", one);
    figures.insert("responses_pg_two_rps", two);
    figures.insert("responses_two_over_one", two / one);
    figures.insert("chat_pg_one_rps", chat_one);
    figures.insert("chat_pg_two_rps", chat_two);
    figures.insert("chat_two_over_one", chat_two / chat_one);
    Ok(figures)
}
