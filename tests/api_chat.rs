//! Black-box tests of the HTTP API on port 0 against the fake upstream:
//! health, models, chat completions (plain and streamed), and the rules that
//! hold everywhere (auth, errors, body limits, CORS, headers, admission).

mod api_support;

use std::time::{Duration, Instant};

use api_support::*;
use hermes::testing::fake_upstream::{
    FakeUpstream, Reply, ScriptedCall, StreamEnd, numbered_words,
};
use serde_json::{Value, json};

const MS: Duration = Duration::from_millis(1);

fn header(res: &awc::ClientResponse, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn assert_envelope(v: &Value, kind: &str, code: Option<&str>) {
    let e = &v["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "{k} missing in {v}");
    }
    assert_eq!(e["type"], kind, "{v}");
    if let Some(c) = code {
        assert_eq!(e["code"], c, "{v}");
    }
}

fn assert_security_headers(res: &awc::ClientResponse) {
    assert_eq!(
        header(res, "content-security-policy").as_deref(),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(
        header(res, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(header(res, "x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(
        header(res, "referrer-policy").as_deref(),
        Some("no-referrer")
    );
    assert!(header(res, "x-request-id").is_some_and(|v| !v.is_empty()));
}

#[actix_web::test]
async fn health_needs_no_key_and_carries_the_headers() {
    let app = spawn_app(vec![]).await;
    for path in ["/health", "/v1/health"] {
        let mut res = client()
            .get(app.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 200);
        assert_security_headers(&res);
        let b = body(&mut res).await;
        assert_eq!(
            b,
            json!({"status":"ok","platform":"hermes-agent","version": env!("CARGO_PKG_VERSION")})
        );
    }
    let res = client()
        .get(app.url("/health"))
        .insert_header(("x-request-id", "abc-123"))
        .send()
        .await;
    assert_eq!(
        res.ok().and_then(|r| header(&r, "x-request-id")).as_deref(),
        Some("abc-123")
    );
    // HEAD works wherever GET does (load balancers and uptime checks use it).
    for path in ["/health", "/v1/health"] {
        let out = raw(
            app.addr,
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "a head, no body: {out}");
    }
    let res = client()
        .head(app.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
}

/// How long client pools (aiohttp, awc) keep an idle connection to reuse
/// it, and a little more; actix-web's default keep-alive (5 s) closed it.
const CLIENT_POOL_IDLE: Duration = Duration::from_secs(16);

#[actix_web::test]
async fn an_idle_connection_is_kept_for_the_clients_next_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(vec![]).await;
    let mut s = tokio::net::TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(CLIENT_POOL_IDLE).await;
        }
        s.write_all(req).await.unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .unwrap_or(0);
        let out = String::from_utf8_lossy(&buf[..n]);
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "round {round}: the connection was closed or failed: {out:?}"
        );
    }
}

#[actix_web::test]
async fn models_need_the_key() {
    let app = spawn_app(vec![]).await;
    let mut res = app
        .get("/v1/models")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let b = body(&mut res).await;
    assert_eq!(b["object"], "list");
    assert_eq!(b["data"][0]["id"], "hermes-agent");
    assert_eq!(b["data"][0]["object"], "model");
    assert_eq!(b["data"][0]["owned_by"], "hermes");
    assert!(b["data"][0]["created"].as_u64().is_some());
    let mut res = app
        .get("/v1/models/hermes-agent")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body(&mut res).await["id"], "hermes-agent");
    let mut res = app
        .get("/v1/models/gpt-5")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404);
    assert_envelope(
        &body(&mut res).await,
        "invalid_request_error",
        Some("model_not_found"),
    );

    for auth in [
        None,
        Some("Bearer wrong-key-0000000000000"),
        Some("Basic dXNlcjpwYXNz"),
    ] {
        let mut req = client().get(app.url("/v1/models"));
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a));
        }
        let mut res = req.send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 401);
        assert_security_headers(&res);
        let b = body(&mut res).await;
        assert_eq!(
            b,
            json!({"error":{"message":"Invalid API key","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})
        );
    }
    // A non-ASCII token is a 401, never a 500.
    let head = "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer kl\u{00e9}\u{00e9}\r\nConnection: close\r\n\r\n";
    let out = raw(app.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
}

#[actix_web::test]
async fn non_streaming_completion_has_the_openai_shape() {
    let app = spawn_app(vec![Reply::completion(
        "Hello from the agent.",
        "stop",
        (82, 17),
    )])
    .await;
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    assert_security_headers(&res);
    assert!(header(&res, "x-hermes-session-id").is_some_and(|s| !s.is_empty()));
    let b = body(&mut res).await;
    assert!(b["id"].as_str().unwrap_or("").starts_with("chatcmpl-"));
    assert_eq!(b["object"], "chat.completion");
    assert!(b["created"].as_u64().is_some_and(|c| c > 1_700_000_000));
    assert_eq!(b["model"], "hermes-agent", "the request's model is echoed");
    assert_eq!(
        b["choices"],
        json!([{"index":0,"message":{"role":"assistant","content":"Hello from the agent."},"logprobs":null,"finish_reason":"stop"}])
    );
    assert_eq!(
        b["usage"],
        json!({"prompt_tokens":82,"completion_tokens":17,"total_tokens":99})
    );
    let up = &app.fake.requests()[0];
    assert_eq!(
        up.body["stream"], false,
        "nobody streams: the upstream call is not streamed"
    );
    assert_eq!(
        up.body["model"], "fake-model",
        "the request's model does not pick the upstream model"
    );
}

#[actix_web::test]
async fn messages_are_layered_and_passed_faithfully() {
    let app = spawn_app(vec![Reply::completion("ok", "stop", (1, 1))]).await;
    let req = json!({"model":"x","temperature":0.3,"n":1,"tools":[],"user":"u","metadata":{"a":1},"messages":[
        {"role":"system","content":"Be terse."},
        {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
        {"role":"user","content":"earlier question"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"lookup","arguments":"{\"q\":1}"}}]},
        {"role":"tool","tool_call_id":"call_9","content":"lookup result"},
        {"role":"assistant","content":"earlier answer"},
        {"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}
    ]});
    let res = app
        .post("/v1/chat/completions")
        .send_json(&req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let up = app.fake.requests()[0].body.clone();
    let msgs = up["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(msgs[0]["role"], "system");
    let sys = msgs[0]["content"].as_str().unwrap_or("");
    assert!(
        sys.starts_with("You are Hermes"),
        "the core prompt comes first"
    );
    assert!(sys.ends_with("Be terse.\nAnswer in French."), "{sys}");
    assert_eq!(msgs[1]["content"], "earlier question");
    assert_eq!(msgs[2]["tool_calls"][0]["id"], "call_9");
    assert_eq!(
        msgs[2]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":1}"
    );
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], "call_9");
    assert_eq!(msgs[4]["content"], "earlier answer");
    assert_eq!(
        msgs[5]["content"][1]["image_url"]["url"],
        "https://example.com/cat.png"
    );
    assert_eq!(msgs.len(), 6);
}

#[actix_web::test]
async fn bad_requests_get_400_naming_the_field() {
    let app = spawn_app(vec![]).await;
    let cases = [
        (json!({"model":"x"}), Some("messages")),
        (json!({"messages":[]}), Some("messages")),
        (json!({"messages":"hi"}), Some("messages")),
        (
            json!({"messages":[{"role":"assistant","content":"x"}]}),
            Some("messages"),
        ),
        (
            json!({"messages":[{"role":"user","content":[{"type":"file","file":{}}]}]}),
            Some("messages[0].content"),
        ),
        (
            json!({"messages":[{"role":"user","content":"x"}],"stream":5}),
            Some("stream"),
        ),
        (
            json!({"messages":[{"role":"wizard","content":"x"}]}),
            Some("messages[0].role"),
        ),
    ];
    for (req, param) in cases {
        let mut res = app
            .post("/v1/chat/completions")
            .send_json(&req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 400, "{req}");
        let b = body(&mut res).await;
        assert_envelope(&b, "invalid_request_error", None);
        assert_eq!(b["error"]["param"].as_str(), param, "{req} → {b}");
    }
    let mut res = app
        .post("/v1/chat/completions")
        .insert_header(("content-type", "application/json"))
        .send_body("{not json")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 400);
    assert_envelope(
        &body(&mut res).await,
        "invalid_request_error",
        Some("invalid_json"),
    );
    let res = app
        .post("/v1/chat/completions")
        .send_json(&json!({"messages":[{"role":"assistant","content":"x"}]}))
        .await;
    let mut res = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        body(&mut res).await["error"]["message"],
        "No user message found in messages"
    );
    assert!(
        app.fake.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[actix_web::test]
async fn only_json_bodies_are_accepted() {
    let app = spawn_app(vec![]).await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let mut res = app
            .post("/v1/chat/completions")
            .insert_header(("content-type", ct))
            .send_body(chat_body("hi", false).to_string())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 415, "{ct}");
        assert_envelope(
            &body(&mut res).await,
            "invalid_request_error",
            Some("unsupported_media_type"),
        );
    }
    let res = app
        .post("/v1/chat/completions")
        .insert_header(("content-type", "application/json; charset=utf-8"))
        .send_body(chat_body("hi", false).to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200, "a charset is fine");
}

#[actix_web::test]
async fn oversized_bodies_get_413_also_when_chunked() {
    let app = spawn_app(vec![]).await;
    // 12 MB chunked, no Content-Length.
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let piece = vec![b' '; 1024 * 1024];
    for _ in 0..12 {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(&piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let out = raw(app.addr, &req, Duration::from_secs(10)).await;
    assert!(
        out.starts_with("HTTP/1.1 413"),
        "{}",
        &out[..out.len().min(300)]
    );
    assert!(out.contains("body_too_large"));
    // A declared Content-Length over the limit is refused before reading.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        12 * 1024 * 1024
    );
    let out = raw(app.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(app.fake.requests().is_empty());
}

#[actix_web::test]
async fn a_body_sent_too_slowly_is_cut_off_with_408() {
    let app = spawn_app_with(vec![], |c| c.api_server.body_timeout = 0.5).await;
    // Headers promise 100 bytes; one arrives, then nothing.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let started = Instant::now();
    let out = raw(app.addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("request_timeout"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connection was not held: {:?}",
        started.elapsed()
    );
    assert!(app.fake.requests().is_empty());
}

#[actix_web::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    let app = spawn_app(vec![]).await;
    let mut res = app
        .get("/v1/nope")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404);
    assert_security_headers(&res);
    assert_envelope(
        &body(&mut res).await,
        "invalid_request_error",
        Some("not_found"),
    );
    let mut res = app
        .get("/v1/chat/completions")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 405);
    assert_envelope(
        &body(&mut res).await,
        "invalid_request_error",
        Some("method_not_allowed"),
    );
    let mut res = client()
        .delete(app.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 405);
    assert_envelope(
        &body(&mut res).await,
        "invalid_request_error",
        Some("method_not_allowed"),
    );
    // Paths under an `{id}` (routed by scopes) answer the same way.
    for (method, path, status, code) in [
        ("GET", "/v1/responses/resp_x/nope", 404, "not_found"),
        ("GET", "/v1/runs/run_x/stop", 405, "method_not_allowed"),
        ("POST", "/api/sessions/s1", 405, "method_not_allowed"),
    ] {
        let m = actix_web::http::Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut res = client()
            .request(m, app.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), status, "{method} {path}");
        assert_envelope(&body(&mut res).await, "invalid_request_error", Some(code));
    }
}

#[actix_web::test]
async fn streaming_frames_follow_the_spec() {
    let app = spawn_app(vec![Reply::text_stream(
        &["Hel", "lo", ", world"],
        20 * MS,
        10 * MS,
        (5, 3),
    )])
    .await;
    let mut req = chat_body("hi", true);
    req["stream_options"] = json!({"include_usage": true});
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header(&res, "x-accel-buffering").as_deref(), Some("no"));
    assert!(header(&res, "x-hermes-session-id").is_some());
    assert_security_headers(&res);
    let (raw_text, events) = sse(&mut res).await;
    assert!(
        !raw_text.contains("event:"),
        "no named events by default: {raw_text}"
    );
    assert!(
        !raw_text.contains("\nid:") && !raw_text.starts_with("id:") && !raw_text.contains("retry:"),
        "{raw_text}"
    );
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let c = chunks(&events);
    assert_eq!(
        c[0]["choices"][0]["delta"],
        json!({"role":"assistant","content":""})
    );
    assert_eq!(c[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(c[0]["choices"][0]["logprobs"], Value::Null);
    let deltas: Vec<&str> = c[1..4]
        .iter()
        .filter_map(|x| x["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        deltas,
        vec!["Hel", "lo", ", world"],
        "one chunk per upstream delta"
    );
    assert_eq!(c[4]["choices"][0]["delta"], json!({}));
    assert_eq!(c[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(c[5]["choices"], json!([]));
    assert_eq!(
        c[5]["usage"],
        json!({"prompt_tokens":5,"completion_tokens":3,"total_tokens":8})
    );
    for x in &c[..5] {
        assert_eq!(x["usage"], Value::Null, "earlier chunks carry usage: null");
    }
    let id = c[0]["id"].clone();
    for x in &c {
        assert_eq!(x["id"], id);
        assert_eq!(x["created"], c[0]["created"]);
        assert_eq!(x["model"], "hermes-agent");
        assert_eq!(x["object"], "chat.completion.chunk");
    }
    assert_eq!(app.fake.requests()[0].body["stream"], true);
}

#[actix_web::test]
async fn deltas_are_relayed_as_they_arrive() {
    let app = spawn_app(vec![Reply::text_stream(
        &["first", "second"],
        10 * MS,
        800 * MS,
        (1, 1),
    )])
    .await;
    let started = Instant::now();
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    use futures_util::StreamExt;
    let mut seen = String::new();
    while !seen.contains("first") {
        let Ok(Some(Ok(b))) = tokio::time::timeout(Duration::from_secs(5), res.next()).await else {
            break;
        };
        seen.push_str(&String::from_utf8_lossy(&b));
    }
    let first_at = started.elapsed();
    assert!(
        seen.contains("first") && !seen.contains("second"),
        "the first delta arrives alone: {seen}"
    );
    let (_, events) = sse(&mut res).await;
    assert!(content(&chunks(&events)).contains("second"));
    // Not a timing target, a sanity bound: the first delta did not wait for the second (800 ms later).
    assert!(first_at < Duration::from_millis(700), "{first_at:?}");
}

#[actix_web::test]
async fn two_concurrent_streams_interleave_correctly() {
    let fake = FakeUpstream::start_with(vec![], |r| {
        let text = r.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let words: Vec<String> = (0..15).map(|i| format!("{text}-{i} ")).collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        Reply::text_stream(
            &refs,
            Duration::from_millis(5),
            Duration::from_millis(7),
            (1, 1),
        )
    });
    let app = start(fake, |_| {}).await;
    let a = async {
        let mut r = app
            .post("/v1/chat/completions")
            .send_json(&chat_body("alpha", true))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        content(&chunks(&sse(&mut r).await.1))
    };
    let b = async {
        let mut r = app
            .post("/v1/chat/completions")
            .send_json(&chat_body("beta", true))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        content(&chunks(&sse(&mut r).await.1))
    };
    let (ta, tb) = futures_util::join!(a, b);
    let expect = |w: &str| (0..15).map(|i| format!("{w}-{i} ")).collect::<String>();
    assert_eq!(ta, expect("alpha"));
    assert_eq!(tb, expect("beta"));
}

#[actix_web::test]
async fn a_client_leaving_a_stream_interrupts_the_upstream() {
    let app = spawn_app(vec![Reply::numbered_stream(100, 10 * MS, 100 * MS)]).await;
    use tokio::io::AsyncReadExt;
    let mut s = raw_post(app.addr, "/v1/chat/completions", &chat_body("talk", true)).await;
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    // Role chunk plus three content chunks.
    while got.matches("\"content\":\"w").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        assert!(n > 0, "stream ended early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(s);
    let left = Instant::now();
    while app.fake.disconnects().is_empty() && left.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = app.fake.disconnects();
    assert!(!d.is_empty(), "the upstream connection was not closed");
    assert!(
        d[0].duration_since(left) < Duration::from_secs(2),
        "{:?}",
        d[0].duration_since(left)
    );
    // The slot was freed.
    let deadline = Instant::now() + Duration::from_secs(3);
    while app.state.admission.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.state.admission.running(), 0);
}

#[actix_web::test]
async fn a_client_leaving_a_plain_request_interrupts_it_too() {
    let app = spawn_app(vec![Reply::Hang]).await;
    let s = raw_post(app.addr, "/v1/chat/completions", &chat_body("hi", false)).await;
    // The request reached the model before the client leaves.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.fake.requests().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(s);
    let left = Instant::now();
    while app.fake.disconnects().is_empty() && left.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !app.fake.disconnects().is_empty(),
        "the upstream request was not dropped"
    );
}

#[actix_web::test]
async fn the_admission_cap_answers_429_with_retry_after() {
    let words = numbered_words(20);
    let app = spawn_app_with(vec![Reply::numbered_stream(20, 10 * MS, 50 * MS)], |c| {
        c.api_server.max_concurrent_runs = 1
    })
    .await;
    let mut first = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("slow", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status(), 200);
    let mut second = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("more", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.status(), 429);
    assert_eq!(header(&second, "retry-after").as_deref(), Some("1"));
    assert_envelope(
        &body(&mut second).await,
        "rate_limit_error",
        Some("rate_limit_exceeded"),
    );
    let (_, events) = sse(&mut first).await;
    assert_eq!(content(&chunks(&events)), words.concat());
    let res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("again", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200, "the slot is free again");
}

#[actix_web::test]
async fn cors_rules() {
    let app = spawn_app(vec![]).await;
    let mut res = app
        .get("/v1/models")
        .insert_header(("Origin", "http://evil.example"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 403);
    assert_envelope(
        &body(&mut res).await,
        "invalid_request_error",
        Some("origin_not_allowed"),
    );

    let app = spawn_app_with(vec![], |c| {
        c.api_server.cors_origins = vec!["http://ui.example".into()]
    })
    .await;
    let res = client()
        .request(awc::http::Method::OPTIONS, app.url("/v1/chat/completions"))
        .insert_header(("Origin", "http://ui.example"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header((
            "Access-Control-Request-Headers",
            "authorization, content-type, x-stainless-os",
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 204);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("http://ui.example")
    );
    assert_eq!(
        header(&res, "access-control-allow-methods").as_deref(),
        Some("GET, POST, DELETE, PATCH, OPTIONS")
    );
    assert!(
        header(&res, "access-control-allow-headers")
            .unwrap_or_default()
            .contains("x-stainless-os")
    );
    assert_eq!(
        header(&res, "access-control-max-age").as_deref(),
        Some("600")
    );
    assert_eq!(header(&res, "vary").as_deref(), Some("Origin"));
    let res = app
        .get("/v1/models")
        .insert_header(("Origin", "http://ui.example"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("http://ui.example")
    );
    assert_eq!(
        header(&res, "access-control-expose-headers").as_deref(),
        Some("x-request-id, X-Hermes-Session-Id")
    );
    let res = app
        .get("/v1/models")
        .insert_header(("Origin", "http://evil.example"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 403);
    // Streams carry the CORS and security headers too.
    let res = app
        .post("/v1/chat/completions")
        .insert_header(("Origin", "http://ui.example"))
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("http://ui.example")
    );
    assert_security_headers(&res);
}

#[actix_web::test]
async fn a_failed_turn_is_502_or_an_error_chunk() {
    let app = spawn_app(vec![
        Reply::error(
            400,
            "context too long for sk-abcdefghijklmnopqrstuvwxyz1234",
        ),
        Reply::error(400, "still too long"),
        Reply::broken_stream(&["partial "], StreamEnd::Die),
    ])
    .await;
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 502);
    assert_eq!(
        header(&res, "x-should-retry").as_deref(),
        Some("false"),
        "a retry would run the whole turn again"
    );
    let b = body(&mut res).await;
    assert_envelope(&b, "server_error", Some("agent_failed"));
    let msg = b["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("context too long"), "{msg}");
    assert!(
        !msg.contains("abcdefghijklmnop"),
        "secrets are redacted: {msg}"
    );

    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        res.status(),
        200,
        "a stream has started before the failure is known"
    );
    let (_, events) = sse(&mut res).await;
    let last_two: Vec<&str> = events
        .iter()
        .rev()
        .take(2)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(last_two[0], "[DONE]");
    let err: Value = serde_json::from_str(last_two[1]).unwrap_or_default();
    assert_envelope(&err, "server_error", Some("agent_failed"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("still too long")
    );

    // Failed after some text: 200 with the text, finish_reason length, X-Hermes-Completed: false.
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        res.status(),
        502,
        "non-streaming upstream call: the broken stream is not used"
    );
    let _ = body(&mut res).await;
}

#[actix_web::test]
async fn failed_after_text_keeps_the_text_and_says_so() {
    // The API streams from the upstream only for streaming clients, so use a
    // tool round: the first call succeeds with text, the second fails.
    let app = spawn_app(vec![
        Reply::tool_completion(&[ScriptedCall::new("c1", "todo", json!({}))], (1, 1)),
        Reply::error(400, "boom"),
    ])
    .await;
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 502, "no answer text was produced");
    let _ = body(&mut res).await;
}

#[actix_web::test]
async fn tool_progress_is_opt_in() {
    let script = || {
        vec![
            Reply::tool_stream(
                &[ScriptedCall::new(
                    "c1",
                    "terminal",
                    json!({"command": "echo hi"}),
                )],
                (1, 1),
            ),
            Reply::text_stream(&["done"], MS, MS, (1, 1)),
        ]
    };
    let app = spawn_app(script()).await;
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (raw_text, events) = sse(&mut res).await;
    assert!(
        !raw_text.contains("event:") && !raw_text.contains("reasoning_content"),
        "{raw_text}"
    );
    assert_eq!(content(&chunks(&events)), "done");

    for r in script() {
        app.fake.push(r);
    }
    let mut res = app
        .post("/v1/chat/completions")
        .insert_header(("X-Hermes-Tool-Progress", "events"))
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, events) = sse(&mut res).await;
    let progress: Vec<Value> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("hermes.tool.progress"))
        .map(|e| serde_json::from_str(&e.data).unwrap_or_default())
        .collect();
    assert_eq!(progress.len(), 2);
    assert_eq!(
        progress[0],
        json!({"tool":"terminal","toolCallId":"c1","label":"terminal: echo hi","status":"running"})
    );
    assert_eq!(progress[1]["status"], "completed");

    for r in script() {
        app.fake.push(r);
    }
    let mut res = app
        .post("/v1/chat/completions")
        .insert_header(("X-Hermes-Tool-Progress", "reasoning"))
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (raw_text, events) = sse(&mut res).await;
    assert!(!raw_text.contains("event:"));
    let reasoning: String = chunks(&events)
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/reasoning_content")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    assert!(reasoning.contains("terminal: echo hi"), "{reasoning}");
}

#[actix_web::test]
async fn keep_alive_comments_during_quiet_stretches() {
    let app = spawn_app_with(
        vec![
            Reply::tool_stream(
                &[ScriptedCall::new(
                    "c1",
                    "terminal",
                    json!({"command": "sleep 1.6"}),
                )],
                (1, 1),
            ),
            Reply::text_stream(&["ok"], MS, MS, (1, 1)),
        ],
        |c| c.api_server.keep_alive = 0.5,
    )
    .await;
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (raw_text, events) = sse(&mut res).await;
    assert!(
        raw_text.matches(": keep-alive\n\n").count() >= 2,
        "{raw_text}"
    );
    assert_eq!(content(&chunks(&events)), "ok");
}

#[actix_web::test]
async fn session_ids_continue_a_conversation() {
    let app = spawn_app(vec![
        Reply::completion("Hello Ada.", "stop", (1, 1)),
        Reply::completion("You are Ada.", "stop", (1, 1)),
    ])
    .await;
    let res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("I am Ada", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sid = header(&res, "x-hermes-session-id").unwrap_or_default();
    assert!(!sid.is_empty());
    let req = json!({"messages":[
        {"role":"user","content":"ignored earlier message"},
        {"role":"user","content":"Who am I?"}]});
    let res = app
        .post("/v1/chat/completions")
        .insert_header(("X-Hermes-Session-Id", sid.as_str()))
        .send_json(&req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        header(&res, "x-hermes-session-id").as_deref(),
        Some(sid.as_str()),
        "echoed"
    );
    let msgs = app.fake.requests()[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let texts: Vec<&str> = msgs
        .iter()
        .skip(1)
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(texts, vec!["I am Ada", "Hello Ada.", "Who am I?"]);

    for bad in ["", "has space", &"x".repeat(257), "semi;colon"] {
        let res = app
            .post("/v1/chat/completions")
            .insert_header(("X-Hermes-Session-Id", bad))
            .send_json(&chat_body("hi", false))
            .await;
        let mut res = res.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 400, "{bad:?}");
        assert_eq!(
            body(&mut res).await["error"]["param"],
            "X-Hermes-Session-Id"
        );
    }
}

#[actix_web::test]
async fn idempotency_keys_replay_wait_and_conflict() {
    let app = spawn_app(vec![Reply::Json {
        status: 200,
        body: json!({"choices":[{"message":{"role":"assistant","content":"only once"},"finish_reason":"stop"}],
                     "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}),
        headers: vec![],
    }])
    .await;
    let send = |text: &'static str| {
        app.post("/v1/chat/completions")
            .insert_header(("Idempotency-Key", "k-1"))
            .send_json(&chat_body(text, false))
    };
    // Two at once: the second waits for the first.
    let (a, b) = futures_util::join!(send("same"), send("same"));
    let (mut a, mut b) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
    );
    let (ba, bb) = (body(&mut a).await, body(&mut b).await);
    assert_eq!(ba["choices"][0]["message"]["content"], "only once");
    assert_eq!(ba, bb, "the duplicate got the first result");
    let mut c = send("same").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body(&mut c).await, ba, "a later retry is replayed");
    assert_eq!(app.fake.requests().len(), 1, "the upstream ran once");
    let mut d = send("different").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.status(), 409);
    assert_envelope(
        &body(&mut d).await,
        "invalid_request_error",
        Some("idempotency_key_reused"),
    );
}

#[actix_web::test]
async fn without_an_upstream_the_server_still_serves_and_says_what_to_set() {
    let app = spawn_app_with(vec![], |c| {
        c.model.base_url = None;
        c.model.default = None;
        c.model.api_key = None;
    })
    .await;
    assert_eq!(
        client()
            .get(app.url("/health"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
    assert_eq!(
        app.get("/v1/models")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
    let mut res = app
        .post("/v1/chat/completions")
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 503);
    let b = body(&mut res).await;
    assert_envelope(&b, "server_error", Some("no_upstream"));
    let msg = b["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("OPENROUTER_API_KEY")
            && msg.contains("OPENAI_BASE_URL")
            && msg.contains("HERMES_MODEL"),
        "{msg}"
    );
}

#[actix_web::test]
async fn a_generated_key_is_used_on_loopback() {
    let app = spawn_app_with(vec![], |c| c.api_server.key = None).await;
    let key = std::fs::read_to_string(app.home.join("api_server.key")).unwrap_or_default();
    let key = key.trim();
    assert!(key.len() >= 16);
    let res = client()
        .get(app.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let res = client()
        .get(app.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 401);
}

#[actix_web::test]
async fn named_keys_all_work() {
    let app = spawn_app_with(vec![], |c| {
        c.api_server.keys = vec![hermes::config::NamedKey {
            name: "alice".into(),
            key: "alice-key-0123456789".into(),
        }]
    })
    .await;
    for k in [KEY, "alice-key-0123456789"] {
        let res = client()
            .get(app.url("/v1/models"))
            .bearer_auth(k)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status(), 200, "{k}");
    }
}

#[actix_web::test]
async fn sampling_parameters_reach_every_upstream_call_of_the_turn() {
    let app = spawn_app(vec![
        Reply::tool_completion(
            &[ScriptedCall::new("c1", "todo", json!({"items": []}))],
            (1, 1),
        ),
        Reply::completion("done", "stop", (1, 1)),
    ])
    .await;
    let mut req = chat_body("hi", false);
    for (k, v) in [
        ("max_tokens", json!(16)),
        ("temperature", json!(0.2)),
        ("top_p", json!(0.9)),
        ("stop", json!(["END"])),
        ("seed", json!(42)),
        ("presence_penalty", json!(0.1)),
        ("frequency_penalty", json!(0.3)),
        ("response_format", json!({"type": "json_object"})),
        ("reasoning_effort", json!("low")),
        ("n", json!(1)),
        (
            "tool_choice",
            json!({"type": "function", "function": {"name": "todo"}}),
        ),
    ] {
        req[k] = v;
    }
    let mut res = app.send("/v1/chat/completions", &req).await;
    assert_eq!(res.status(), 200, "{}", body(&mut res).await);
    let reqs = app.fake.requests();
    assert_eq!(reqs.len(), 2);
    for (i, r) in reqs.iter().enumerate() {
        let b = &r.body;
        assert_eq!(b["max_tokens"], 16, "call {i}");
        assert_eq!(b["temperature"], 0.2, "call {i}");
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["seed"], 42);
        assert_eq!(b["presence_penalty"], 0.1);
        assert_eq!(b["frequency_penalty"], 0.3);
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        assert_eq!(b["reasoning_effort"], "low");
        assert!(b.get("n").is_none());
    }
    // The forced tool applies to the first call only; later ones are "auto".
    assert_eq!(reqs[0].body["tool_choice"]["function"]["name"], "todo");
    assert_eq!(reqs[1].body["tool_choice"], "auto");

    // Without parameters, none are sent (the server's defaults hold).
    let mut res = app
        .send(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", body(&mut res).await);
    let last = app
        .fake
        .requests()
        .pop()
        .map(|r| r.body)
        .unwrap_or_default();
    for k in [
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "tools",
        "tool_choice",
    ] {
        assert!(last.get(k).is_none(), "{k} in {last}");
    }
}

#[actix_web::test]
async fn wrong_parameters_are_400_naming_them() {
    let app = spawn_app(vec![]).await;
    for (k, v, param) in [
        ("temperature", json!("hot"), "temperature"),
        ("max_tokens", json!(-1), "max_tokens"),
        ("n", json!(2), "n"),
        ("tools", json!("garbage"), "tools"),
        (
            "tool_choice",
            json!({"type": "function", "function": {"name": "rm_rf"}}),
            "tool_choice",
        ),
    ] {
        let mut req = chat_body("hi", false);
        req[k] = v;
        let mut res = app.send("/v1/chat/completions", &req).await;
        assert_eq!(res.status(), 400, "{k}");
        let b = body(&mut res).await;
        assert_envelope(&b, "invalid_request_error", None);
        assert_eq!(b["error"]["param"], param, "{b}");
    }
    assert!(app.fake.requests().is_empty(), "nothing reached the model");
}

#[actix_web::test]
async fn model_server_failures_are_answered_in_kind() {
    let app = spawn_app_with(
        vec![
            Reply::error(400, "This model's maximum context length is 4096 tokens"),
            Reply::error(429, "quota").with_header("Retry-After", "7"),
            Reply::error(400, "Requested tokens (9000) exceed context window of 4096"),
        ],
        |c| c.model.max_attempts = 1,
    )
    .await;
    let mut res = app
        .send("/v1/chat/completions", &chat_body("hi", false))
        .await;
    assert_eq!(res.status(), 400, "the conversation is the client's input");
    let b = body(&mut res).await;
    assert_envelope(&b, "invalid_request_error", Some("context_length_exceeded"));

    let mut res = app
        .send("/v1/chat/completions", &chat_body("hi", false))
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after").as_deref(), Some("7"));
    assert_envelope(
        &body(&mut res).await,
        "rate_limit_error",
        Some("rate_limit_exceeded"),
    );

    let mut res = app
        .send("/v1/chat/completions", &chat_body("hi", true))
        .await;
    let (_, events) = sse(&mut res).await;
    let err = chunks(&events).pop().unwrap_or_default();
    assert_eq!(err["error"]["code"], "context_length_exceeded", "{err}");
}

#[actix_web::test]
async fn usage_the_server_did_not_report_is_estimated_and_says_so() {
    let app = spawn_app(vec![
        Reply::text_stream(&["12345678"], MS, MS, (0, 0)).without_usage(),
    ])
    .await;
    let mut req = chat_body("hi", true);
    req["stream_options"] = json!({"include_usage": true});
    let mut res = app.send("/v1/chat/completions", &req).await;
    let (_, events) = sse(&mut res).await;
    let usage = chunks(&events).pop().unwrap_or_default()["usage"].clone();
    assert_eq!(usage["completion_tokens"], 2, "{usage}");
    assert_eq!(usage["estimated"], true, "{usage}");
}

/// Reads a raw response until `n` content chunks arrived.
async fn read_chunks(s: &mut tokio::net::TcpStream, n: usize) {
    use tokio::io::AsyncReadExt;
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("\"content\":\"w").count() < n {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        assert!(read > 0, "stream ended early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..read]));
    }
}

#[actix_web::test]
async fn a_stream_the_client_stops_is_recorded_interrupted_and_counted() {
    let app = spawn_app(vec![
        Reply::numbered_stream(100, 10 * MS, 100 * MS),
        Reply::completion("next answer", "stop", (1, 1)),
    ])
    .await;
    let session = [("X-Hermes-Session-Id", "stopped-1")];
    let mut s = raw_post_with(
        app.addr,
        "/v1/chat/completions",
        &chat_body("talk", true),
        &session,
    )
    .await;
    read_chunks(&mut s, 3).await;
    drop(s); // Open WebUI's Stop button
    // The run holds its admission slot until its turn is recorded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.state.admission.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.state.admission.running(), 0);

    let mut res = app
        .post("/v1/chat/completions")
        .insert_header(session[0])
        .send_json(&chat_body("and now?", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200, "{}", body(&mut res).await);
    let msgs = app.fake.requests()[1].body["messages"].clone();
    let texts = turns(&msgs);
    assert_eq!(
        texts[0],
        ("user".to_string(), "talk".to_string()),
        "{texts:?}"
    );
    assert_eq!(texts[1].0, "assistant");
    assert!(
        texts[1].1.starts_with("w0 ") && texts[1].1.ends_with(" (interrupted)"),
        "the partial answer is kept and marked: {texts:?}"
    );
    assert_eq!(texts[2], ("user".to_string(), "and now?".to_string()));

    let mut m = app
        .get("/metrics")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&m.body().await.unwrap_or_default()).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("hermes_upstream_requests_total") && l.contains("cancelled")),
        "{text}"
    );
}

#[actix_web::test]
async fn a_turn_that_cannot_be_stored_is_an_error_not_a_silent_200() {
    if on_postgres() {
        return; // A full disk is made with an SQLite trigger.
    }
    let app = spawn_app(vec![]).await;
    // Make every transcript write fail, as a full disk would.
    let db =
        rusqlite::Connection::open(app.home.join("state.db")).unwrap_or_else(|e| panic!("{e}"));
    db.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON messages BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut res = app
        .post("/v1/chat/completions")
        .insert_header(("X-Hermes-Session-Id", "full-disk"))
        .send_json(&chat_body("hi", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 500);
    assert_envelope(&body(&mut res).await, "server_error", Some("storage_error"));

    let mut res = app
        .post("/v1/chat/completions")
        .insert_header(("X-Hermes-Session-Id", "full-disk"))
        .send_json(&chat_body("hi", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (raw, events) = sse(&mut res).await;
    let last = chunks(&events).pop().unwrap_or_default();
    assert_eq!(last["error"]["code"], "storage_error", "{raw}");
    assert!(raw.trim_end().ends_with("data: [DONE]"));
    assert!(
        !raw.contains("finish_reason\":\"stop"),
        "no clean finish for an answer that was not stored: {raw}"
    );
}
