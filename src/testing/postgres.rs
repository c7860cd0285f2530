//! The test PostgreSQL server (`tests/postgres/start.sh`; `.ci/run` starts
//! one): whether the tests have one, and a fresh database on it for each
//! test that needs one.

/// The URL of the test server from `HERMES_TEST_POSTGRES_URL`, if any. With
/// `HERMES_REQUIRE_POSTGRES=1` (set by `.ci/run`) a missing server panics
/// instead, so CI can never pass without running the PostgreSQL half.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("HERMES_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && std::env::var("HERMES_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("HERMES_REQUIRE_POSTGRES=1 but HERMES_TEST_POSTGRES_URL is not set");
    }
    if url.is_none() {
        eprintln!("HERMES_TEST_POSTGRES_URL is not set: the PostgreSQL half is skipped");
    }
    url
}

/// A new, empty database on the server at `url`, and its URL.
pub async fn fresh_postgres_db(url: &str) -> String {
    let name = format!("hermes_t_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let _ = task.await;
    // Swap the database name at the end of the URL.
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{name}")
}
