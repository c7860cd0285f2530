//! Black-box tests of work that outlives its connection: background
//! responses, resumed response streams and cancellation, `/v1/runs`
//! (events with ids and replay, idempotency, stop, steer, approvals, key
//! isolation). What a restart does to both is in `service.rs` (kill -9).

mod api_support;

use std::time::Duration;

use api_support::*;
use hermes::testing::fake_upstream::{Reply, ScriptedCall};
use serde_json::{Value, json};

const MS: Duration = Duration::from_millis(1);
const OTHER_KEY: &str = "other-key-0123456789abcdef";

fn with_other_key(c: &mut hermes::config::Config) {
    c.api_server.keys = vec![hermes::config::NamedKey {
        name: "other".into(),
        key: OTHER_KEY.into(),
    }];
}

async fn json_of(mut res: awc::ClientResponse) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, body(&mut res).await)
}

async fn get_json(app: &App, path: &str) -> (u16, Value) {
    json_of(app.get(path).send().await.unwrap_or_else(|e| panic!("{e}"))).await
}

/// `POST /v1/runs/{id}/steer` with `input`: (status, body).
async fn steer(app: &App, id: &str, input: &str) -> (u16, Value) {
    json_of(
        app.send(&format!("/v1/runs/{id}/steer"), &json!({"input": input}))
            .await,
    )
    .await
}

/// Reads an SSE stream to its end: (event name, data, `id:`) per event.
async fn stream(req: awc::ClientRequest) -> (u16, Vec<(String, Value, Option<u64>)>) {
    let mut res = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = res.status().as_u16();
    let (raw, _) = sse(&mut res).await;
    let mut out = Vec::new();
    for block in raw.split("\n\n") {
        let (mut name, mut data, mut id) = (String::new(), Value::Null, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap_or(Value::String(v.into()));
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            }
        }
        if !name.is_empty() {
            out.push((name, data, id));
        }
    }
    (status, out)
}

fn seqs(events: &[(String, Value, Option<u64>)]) -> Vec<u64> {
    events
        .iter()
        .map(|(_, d, _)| d["sequence_number"].as_u64().unwrap_or(u64::MAX))
        .collect()
}

/// Polls until `path` shows a status other than the running ones.
async fn settled(app: &App, path: &str) -> Value {
    for _ in 0..500 {
        let (_, v) = get_json(app, path).await;
        let s = v["status"].as_str().unwrap_or("");
        if !["queued", "in_progress", "running", "requires_approval"].contains(&s) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never settled");
}

#[actix_web::test]
async fn a_background_response_resumes_at_every_point_with_any_number_of_readers() {
    let app = spawn_app(vec![Reply::numbered_stream(40, 10 * MS, 10 * MS)]).await;
    let (s, r) = json_of(
        app.send(
            "/v1/responses",
            &json!({"input": "count", "background": true}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "in_progress");
    assert_eq!(r["background"], true);
    let id = r["id"].as_str().unwrap_or("").to_string();
    let path = format!("/v1/responses/{id}?stream=true");
    // Two readers while it runs: one from the start, one from event 3 on.
    let (a, b) = futures_util::join!(
        stream(app.get(&path)),
        stream(app.get(&format!("{path}&starting_after=3")))
    );
    let (all, late) = (a.1, b.1);
    let n = all.len() as u64;
    assert_eq!(
        seqs(&all),
        (0..n).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert_eq!(seqs(&late), (4..n).collect::<Vec<_>>());
    assert_eq!(all[0].0, "response.created");
    let last = &all[all.len() - 1];
    assert_eq!(last.0, "response.completed");
    let text = last.1["response"]["output_text"].as_str().unwrap_or("");
    assert!(
        text.starts_with("w0 ") && text.trim_end().ends_with("w39"),
        "{text}"
    );
    // Once it ended, every point replays from the store.
    for k in 0..n {
        let (_, got) = stream(app.get(&format!("{path}&starting_after={k}"))).await;
        assert_eq!(seqs(&got), (k + 1..n).collect::<Vec<_>>(), "after {k}");
    }
    let (_, got) = stream(app.get(&format!("{path}&starting_after=-1"))).await;
    assert_eq!(got.len() as u64, n);
    // GET without stream is the object `response.completed` carried.
    let (_, obj) = get_json(&app, &format!("/v1/responses/{id}")).await;
    assert_eq!(obj, last.1["response"]);
}

#[actix_web::test]
async fn bad_resume_and_background_requests_get_the_envelope() {
    let app = spawn_app(vec![Reply::completion("ok", "stop", (1, 1))]).await;
    let (s, e) = json_of(
        app.send(
            "/v1/responses",
            &json!({"input": "x", "background": true, "store": false}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("background")),
        "{e}"
    );
    let (_, r) = json_of(app.send("/v1/responses", &json!({"input": "x"})).await).await;
    let id = r["id"].as_str().unwrap_or("");
    for bad in ["-2", "x", "1.5"] {
        let (s, e) = get_json(
            &app,
            &format!("/v1/responses/{id}?stream=true&starting_after={bad}"),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {e}");
        assert_eq!(e["error"]["param"], "starting_after");
    }
    let (s, _) = get_json(&app, "/v1/responses/resp_nope?stream=true").await;
    assert_eq!(s, 404);
    let (s, _) = json_of(
        app.post("/v1/responses/resp_nope/cancel")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(s, 404);
    // A finished response is returned unchanged by cancel.
    let (s, c) = json_of(
        app.post(&format!("/v1/responses/{id}/cancel"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!((s, c["status"].as_str()), (200, Some("completed")));
}

#[actix_web::test]
async fn cancel_stops_a_running_response_and_its_streams_end_without_another_event() {
    let app = spawn_app(vec![Reply::numbered_stream(500, 10 * MS, 10 * MS)]).await;
    let (_, r) = json_of(
        app.send(
            "/v1/responses",
            &json!({"input": "long", "background": true}),
        )
        .await,
    )
    .await;
    let id = r["id"].as_str().unwrap_or("").to_string();
    let reader = actix_web::rt::spawn(stream(app.get(&format!("/v1/responses/{id}?stream=true"))));
    // Barrier: some text has been produced.
    for _ in 0..500 {
        let (_, v) = get_json(&app, &format!("/v1/responses/{id}")).await;
        if v["output_text"].as_str().unwrap_or("").len() > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, c) = json_of(
        app.post(&format!("/v1/responses/{id}/cancel"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!((s, c["status"].as_str()), (200, Some("cancelled")), "{c}");
    let (_, events) = reader.await.unwrap_or_else(|e| panic!("{e}"));
    let last = events.last().map(|e| e.0.as_str()).unwrap_or("");
    assert_eq!(
        last, "response.output_text.delta",
        "no closing event after a cancel"
    );
    let (_, again) = get_json(&app, &format!("/v1/responses/{id}")).await;
    assert_eq!(again["status"], "cancelled");
    let last = again["output"].as_array().and_then(|o| o.last()).cloned();
    assert_eq!(
        last.map(|m| m["status"].clone()),
        Some(json!("incomplete")),
        "cut off"
    );
    assert!(
        !again["output_text"]
            .as_str()
            .unwrap_or("w499")
            .contains("w499")
    );
}

async fn create_run(app: &App, body: &Value, key: Option<&str>) -> awc::ClientResponse {
    let mut req = app.post("/v1/runs");
    if let Some(k) = key {
        req = req.insert_header(("Idempotency-Key", k));
    }
    req.send_json(body).await.unwrap_or_else(|e| panic!("{e}"))
}

#[actix_web::test]
async fn a_run_streams_numbered_events_replays_after_any_id_and_keeps_its_session() {
    let app = spawn_app(vec![
        Reply::text_stream(&["Hello ", "there."], MS, 5 * MS, (3, 2)),
        Reply::text_stream(&["Again."], MS, MS, (3, 1)),
    ])
    .await;
    let res = create_run(
        &app,
        &json!({"input": "hi", "instructions": "be brief"}),
        None,
    )
    .await;
    let (s, r) = json_of(res).await;
    assert_eq!(s, 202, "{r}");
    assert_eq!(
        (r["object"].as_str(), r["status"].as_str()),
        (Some("hermes.run"), Some("queued"))
    );
    let id = r["id"].as_str().unwrap_or("").to_string();
    let session = r["session_id"].as_str().unwrap_or("").to_string();
    let (s, events) = stream(app.get(&format!("/v1/runs/{id}/events"))).await;
    assert_eq!(s, 200);
    let ids: Vec<u64> = events.iter().filter_map(|e| e.2).collect();
    let n = events.len() as u64;
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds[0], "run.started");
    assert_eq!(kinds[kinds.len() - 1], "run.completed");
    let text: String = events
        .iter()
        .filter(|e| e.0 == "message.delta")
        .map(|e| e.1["delta"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(text, "Hello there.");
    let run = settled(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["output_text"], "Hello there.");
    assert!(
        run["started_at"].is_u64() && run["finished_at"].is_u64(),
        "{run}"
    );
    assert_eq!(run["usage"]["completion_tokens"], 2);
    // Replay after any id, by header or query (the query wins).
    for k in 0..=n {
        let (_, got) = stream(
            app.get(&format!("/v1/runs/{id}/events"))
                .insert_header(("Last-Event-ID", k.to_string())),
        )
        .await;
        assert_eq!(
            got.iter().filter_map(|e| e.2).collect::<Vec<_>>(),
            (k + 1..=n).collect::<Vec<_>>()
        );
    }
    let (_, got) = stream(
        app.get(&format!("/v1/runs/{id}/events?after={}", n - 1))
            .insert_header(("Last-Event-ID", "0")),
    )
    .await;
    assert_eq!(got.len(), 1);
    let (s, e) = get_json(&app, &format!("/v1/runs/{id}/events?after=-1")).await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("after")));
    // A second run in the same session sees the first turn.
    let res = create_run(&app, &json!({"input": "and?", "session_id": session}), None).await;
    let (s, r2) = json_of(res).await;
    assert_eq!(
        (s, r2["session_id"].as_str()),
        (202, Some(session.as_str()))
    );
    let id2 = r2["id"].as_str().unwrap_or("");
    settled(&app, &format!("/v1/runs/{id2}")).await;
    let sent = &app.fake.requests()[1].body;
    let turns = turns(&sent["messages"]);
    assert!(
        turns
            .iter()
            .any(|(r, t)| r == "assistant" && t == "Hello there."),
        "{turns:?}"
    );
    assert_eq!(turns.last().map(|t| t.1.as_str()), Some("and?"));
}

#[actix_web::test]
async fn an_idempotency_key_replays_its_run_and_refuses_another_body() {
    let app = spawn_app(vec![Reply::text_stream(&["one"], MS, MS, (1, 1))]).await;
    let body = json!({"input": "once"});
    let (s, first) = json_of(create_run(&app, &body, Some("key-1")).await).await;
    assert_eq!(s, 202);
    let res = create_run(&app, &body, Some("key-1")).await;
    assert_eq!(
        res.headers()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let (s, again) = json_of(res).await;
    assert_eq!((s, again["id"].clone()), (202, first["id"].clone()));
    let (s, e) = json_of(create_run(&app, &json!({"input": "other"}), Some("key-1")).await).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("idempotency_key_conflict"))
    );
    for bad in ["has space", &"k".repeat(256)] {
        let (s, e) = json_of(create_run(&app, &body, Some(bad)).await).await;
        assert_eq!(
            (s, e["error"]["param"].as_str()),
            (400, Some("Idempotency-Key"))
        );
    }
    let id = first["id"].as_str().unwrap_or("");
    settled(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(app.fake.requests().len(), 1, "one run, one model call");
}

#[actix_web::test]
async fn runs_and_their_sessions_are_private_to_their_key() {
    let app = spawn_app_with(
        vec![Reply::text_stream(&["mine"], MS, MS, (1, 1))],
        with_other_key,
    )
    .await;
    let (_, r) = json_of(create_run(&app, &json!({"input": "x"}), None).await).await;
    let (id, session) = (
        r["id"].as_str().unwrap_or(""),
        r["session_id"].as_str().unwrap_or(""),
    );
    settled(&app, &format!("/v1/runs/{id}")).await;
    let other = |req: awc::ClientRequest| req.bearer_auth(OTHER_KEY);
    for path in ["", "/events"] {
        let res = other(client().get(app.url(&format!("/v1/runs/{id}{path}"))))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 404, "GET {path}");
    }
    for (path, body) in [
        ("/stop", json!({})),
        ("/steer", json!({"input": "x"})),
        ("/approval", json!({"approval_id": "a", "decision": "deny"})),
    ] {
        let res = other(client().post(app.url(&format!("/v1/runs/{id}{path}"))))
            .send_json(&body)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 404, "POST {path}");
    }
    let res = other(client().post(app.url("/v1/runs")))
        .send_json(&json!({"input": "x", "session_id": session}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404, "another key's session");
    let (s, _) = get_json(&app, "/v1/runs/run_unknown").await;
    assert_eq!(s, 404);
}

#[actix_web::test]
async fn stop_cancels_a_run_and_steer_reaches_the_next_model_call() {
    let app = spawn_app(vec![
        Reply::tool_stream(
            &[ScriptedCall::new(
                "c1",
                "terminal",
                json!({"command": "sleep 1"}),
            )],
            (1, 1),
        ),
        Reply::text_stream(&["Steered."], MS, MS, (1, 1)),
        Reply::numbered_stream(500, 10 * MS, 10 * MS),
    ])
    .await;
    let (_, r) = json_of(create_run(&app, &json!({"input": "work"}), None).await).await;
    let id = r["id"].as_str().unwrap_or("").to_string();
    // Barrier: the tool runs (for a second).
    assert!(stream_until(&app, &id, "tool.started").await);
    let (s, _) = steer(&app, &id, "also say hi").await;
    assert_eq!(s, 202);
    let run = settled(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "completed");
    let second = &app.fake.requests()[1].body;
    let t = turns(&second["messages"]);
    assert_eq!(
        t.last().map(|x| (x.0.as_str(), x.1.as_str())),
        Some(("user", "also say hi")),
        "{t:?}"
    );
    let (s, e) = steer(&app, &id, "late").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("run_not_running"))
    );
    let (s, e) = steer(&app, &id, "").await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("input")));

    // Stop: the run ends cancelled, its events end with run.cancelled.
    let (_, r) = json_of(create_run(&app, &json!({"input": "long"}), None).await).await;
    let id = r["id"].as_str().unwrap_or("").to_string();
    assert!(stream_until(&app, &id, "message.delta").await);
    let (s, stopped) = json_of(app.send(&format!("/v1/runs/{id}/stop"), &json!({})).await).await;
    assert_eq!(
        (s, stopped["status"].as_str()),
        (200, Some("cancelled")),
        "{stopped}"
    );
    let (_, events) = stream(app.get(&format!("/v1/runs/{id}/events"))).await;
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("run.cancelled"));
    let (_, again) = json_of(app.send(&format!("/v1/runs/{id}/stop"), &json!({})).await).await;
    assert_eq!(again["status"], "cancelled");
}

/// Reads a run's events until one named `kind` arrives (true) or the run ends.
async fn stream_until(app: &App, id: &str, kind: &str) -> bool {
    use futures_util::StreamExt;
    let mut res = app
        .get(&format!("/v1/runs/{id}/events"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut raw = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, res.next()).await {
        raw.push_str(&String::from_utf8_lossy(&chunk));
        if raw.contains(&format!("event: {kind}\n")) {
            return true;
        }
    }
    false
}

#[actix_web::test]
async fn a_run_waits_for_the_clients_approval() {
    let call = |id: &str, file: &str| {
        Reply::tool_stream(
            &[ScriptedCall::new(
                id,
                "terminal",
                json!({"command": format!("touch {file}")}),
            )],
            (1, 1),
        )
    };
    let app = spawn_app_with(
        vec![
            call("c1", "approved-marker"),
            Reply::text_stream(&["Made it."], MS, MS, (1, 1)),
            call("c2", "denied-marker"),
            Reply::text_stream(&["Did not."], MS, MS, (1, 1)),
        ],
        |c| {
            c.approvals.mode = hermes::config::ApprovalMode::Ask;
            c.approvals.patterns = vec![r"\btouch\b".into()];
        },
    )
    .await;
    for (decision, file, ok) in [
        ("approve", "approved-marker", true),
        ("deny", "denied-marker", false),
    ] {
        let (_, r) = json_of(create_run(&app, &json!({"input": "touch it"}), None).await).await;
        let id = r["id"].as_str().unwrap_or("").to_string();
        assert!(stream_until(&app, &id, "approval.required").await);
        let (_, run) = get_json(&app, &format!("/v1/runs/{id}")).await;
        assert_eq!(run["status"], "requires_approval", "{run}");
        let pending = &run["pending_approval"];
        assert!(
            pending["command"].as_str().unwrap_or("").contains(file),
            "{run}"
        );
        assert!(pending["expires_at"].is_u64());
        let approval_id = pending["approval_id"].as_str().unwrap_or("").to_string();
        let path = format!("/v1/runs/{id}/approval");
        let (s, e) = json_of(
            app.send(
                &path,
                &json!({"approval_id": approval_id, "decision": "maybe"}),
            )
            .await,
        )
        .await;
        assert_eq!((s, e["error"]["param"].as_str()), (400, Some("decision")));
        let (s, e) = json_of(
            app.send(
                &path,
                &json!({"approval_id": "appr_other", "decision": "approve"}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (409, Some("approval_not_pending"))
        );
        let (s, _) = json_of(
            app.send(
                &path,
                &json!({"approval_id": approval_id, "decision": decision}),
            )
            .await,
        )
        .await;
        assert_eq!(s, 200);
        let again = json!({"approval_id": approval_id, "decision": "approve"});
        let (s, e) = json_of(app.send(&path, &again).await).await;
        let code = e["error"]["code"].as_str();
        assert_eq!(
            (s, code),
            (409, Some("approval_not_pending")),
            "answered once"
        );
        let run = settled(&app, &format!("/v1/runs/{id}")).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(app.cwd.path().join(file).exists(), ok, "{decision}");
        let (_, events) = stream(app.get(&format!("/v1/runs/{id}/events"))).await;
        let done = events
            .iter()
            .find(|e| e.0 == "tool.completed")
            .map(|e| e.1["ok"].clone());
        assert_eq!(done, Some(Value::Bool(ok)));
    }
}

#[actix_web::test]
async fn responses_are_private_to_their_key_and_a_deleted_running_one_stays_deleted() {
    let app = spawn_app_with(
        vec![
            Reply::text_stream(&["mine"], MS, MS, (1, 1)),
            Reply::numbered_stream(500, 10 * MS, 10 * MS),
        ],
        with_other_key,
    )
    .await;
    let (_, r) = json_of(app.send("/v1/responses", &json!({"input": "x"})).await).await;
    let id = r["id"].as_str().unwrap_or("").to_string();
    let other_get = |path: String| client().get(app.url(&path)).bearer_auth(OTHER_KEY);
    let other_post = |path: &str| client().post(app.url(path)).bearer_auth(OTHER_KEY);
    for path in [
        format!("/v1/responses/{id}"),
        format!("/v1/responses/{id}?stream=true"),
        format!("/v1/responses/{id}/input_items"),
    ] {
        let res = other_get(path.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = other_post(&format!("/v1/responses/{id}/cancel"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404);
    let res = client()
        .delete(app.url(&format!("/v1/responses/{id}")))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404);
    let res = other_post("/v1/responses")
        .send_json(&json!({"input": "y", "previous_response_id": id}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404, "another key's chain");
    let (s, _) = get_json(&app, &format!("/v1/responses/{id}")).await;
    assert_eq!(s, 200, "the owner still sees it");

    // Deleting a running response stops it: it does not come back.
    let (_, r) = json_of(
        app.send(
            "/v1/responses",
            &json!({"input": "long", "background": true}),
        )
        .await,
    )
    .await;
    let running = r["id"].as_str().unwrap_or("").to_string();
    let res = client()
        .delete(app.url(&format!("/v1/responses/{running}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    // Barrier: the delete returned after the run ended; nothing is left to write it.
    let (s, _) = get_json(&app, &format!("/v1/responses/{running}")).await;
    assert_eq!(s, 404);
    let (s, _) = get_json(&app, &format!("/v1/responses/{running}?stream=true")).await;
    assert_eq!(s, 404);
}

#[actix_web::test]
async fn text_steered_during_the_last_answer_gets_one_more_model_call() {
    let app = spawn_app(vec![
        Reply::numbered_stream(100, 10 * MS, 10 * MS),
        Reply::text_stream(&["Steered."], MS, MS, (1, 1)),
    ])
    .await;
    let (_, r) = json_of(create_run(&app, &json!({"input": "count"}), None).await).await;
    let id = r["id"].as_str().unwrap_or("").to_string();
    assert!(stream_until(&app, &id, "message.delta").await);
    // While it runs: GET shows the text so far.
    let (_, now) = get_json(&app, &format!("/v1/runs/{id}")).await;
    assert!(
        now["output_text"].as_str().unwrap_or("").starts_with("w0"),
        "{now}"
    );
    let (s, _) = steer(&app, &id, "and then stop").await;
    assert_eq!(s, 202);
    let run = settled(&app, &format!("/v1/runs/{id}")).await;
    assert_eq!(
        (run["status"].as_str(), run["output_text"].as_str()),
        (Some("completed"), Some("Steered."))
    );
    let second = &app.fake.requests()[1].body;
    let t = turns(&second["messages"]);
    assert_eq!(
        t.last().map(|x| (x.0.as_str(), x.1.as_str())),
        Some(("user", "and then stop"))
    );
    assert!(
        t.iter()
            .any(|(r, x)| r == "assistant" && x.starts_with("w0 ")),
        "the first answer is kept"
    );
}

#[actix_web::test]
async fn a_session_is_busy_while_its_run_goes_and_input_rules_hold() {
    let app = spawn_app_with(
        vec![
            Reply::numbered_stream(100, 10 * MS, 10 * MS),
            Reply::text_stream(&["ok"], MS, MS, (1, 1)),
        ],
        with_other_key,
    )
    .await;
    let (_, r) = json_of(create_run(&app, &json!({"input": "count"}), Some("k-1")).await).await;
    let (id, session) = (
        r["id"].as_str().unwrap_or(""),
        r["session_id"].as_str().unwrap_or(""),
    );
    let (s, e) =
        json_of(create_run(&app, &json!({"input": "more", "session_id": session}), None).await)
            .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("session_busy")),
        "{e}"
    );
    let (s, e) = json_of(
        create_run(
            &app,
            &json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "session_id": session}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("input")));
    // The same body with other spacing is the same request.
    let res = app
        .post("/v1/runs")
        .insert_header(("Idempotency-Key", "k-1"))
        .insert_header(("content-type", "application/json"))
        .send_body("{ \"input\" :  \"count\" }")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (s, again) = json_of(res).await;
    assert_eq!((s, again["id"].as_str()), (202, Some(id)));
    // Another key cannot use this session through chat completions either.
    let res = client()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(OTHER_KEY)
        .insert_header(("X-Hermes-Session-Id", session))
        .send_json(&chat_body("hi", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404);
    settled(&app, &format!("/v1/runs/{id}")).await;
}
