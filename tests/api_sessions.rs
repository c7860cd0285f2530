//! Black-box tests of the sessions API (`/api/sessions...`) and
//! `/v1/capabilities` on port 0 against the fake upstream. Sessions are made
//! the way clients make them: chat completions with `X-Hermes-Session-Id`.

mod api_support;

use std::time::Duration;

use actix_web::http::Method;
use api_support::*;
use hermes::config::{ApprovalMode, NamedKey};
use hermes::openai::{FunctionCall, Message, ToolCall, Usage};
use hermes::testing::fake_upstream::Reply;
use serde_json::{Value, json};

/// A second key, named `bob`, that sees only its own sessions.
const BOB: &str = "bob-key-0123456789abcdef";
/// A key named `root`, in `api_server.admin_keys`.
const ROOT: &str = "root-key-0123456789abcdef";

/// A gateway with the default key (`default`), `bob` and the admin `root`.
async fn app(script: Vec<Reply>) -> App {
    spawn_app_with(script, |c| {
        c.api_server.keys = vec![
            NamedKey {
                name: "bob".into(),
                key: BOB.into(),
            },
            NamedKey {
                name: "root".into(),
                key: ROOT.into(),
            },
        ];
        c.api_server.admin_keys = vec!["root".into()];
    })
    .await
}

fn answer(text: &str) -> Reply {
    Reply::completion(text, "stop", (1, 1))
}

/// Sends `method path` with `key` (and a JSON body); status and body.
async fn call(app: &App, method: Method, path: &str, key: &str, b: Option<Value>) -> (u16, Value) {
    let req = client()
        .request(method, app.url(path))
        .bearer_auth(key)
        .timeout(Duration::from_secs(30));
    let res = match b {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    let mut res = res.unwrap_or_else(|e| panic!("{path}: {e}"));
    (res.status().as_u16(), body(&mut res).await)
}

/// One turn of chat completions in session `sid`, as `key`.
async fn turn(app: &App, key: &str, sid: &str, text: &str) -> u16 {
    let res = client()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .insert_header(("X-Hermes-Session-Id", sid))
        .send_json(&chat_body(text, false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    res.status().as_u16()
}

/// Sets sessions' `updated_at` (times a test cannot wait for).
async fn set_updated(app: &App, times: &[(&str, i64)]) {
    let sql: String = times
        .iter()
        .map(|(key, t)| format!("UPDATE sessions SET updated_at = {t} WHERE key = '{key}';"))
        .collect();
    exec_sql(&app.home, &sql).await;
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|s| s["id"].as_str()).collect())
        .unwrap_or_default()
}

fn assert_error(status: u16, b: &Value, want: u16, code: Option<&str>, param: Option<&str>) {
    assert_eq!(status, want, "{b}");
    for k in ["message", "type", "param", "code"] {
        assert!(b["error"].get(k).is_some(), "{k} missing in {b}");
    }
    if let Some(c) = code {
        assert_eq!(b["error"]["code"], c, "{b}");
    }
    if let Some(p) = param {
        assert_eq!(b["error"]["param"], p, "{b}");
    }
}

#[actix_web::test]
async fn a_key_lists_its_own_sessions_newest_first_in_pages() {
    let app = app((0..4).map(|_| answer("ok")).collect()).await;
    for (key, sid) in [(KEY, "s-a"), (KEY, "s-b"), (KEY, "s-c"), (BOB, "s-bob")] {
        assert_eq!(turn(&app, key, sid, "hi").await, 200);
    }
    set_updated(
        &app,
        &[
            ("api:s-a", 300),
            ("api:s-b", 100),
            ("api:s-c", 200),
            ("api:s-bob", 400),
        ],
    )
    .await;
    let (status, page) = call(&app, Method::GET, "/api/sessions", KEY, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(
        ids(&page),
        vec!["s-a", "s-c", "s-b"],
        "own only, newest first"
    );
    assert_eq!(page["has_more"], false);
    let first = &page["data"][0];
    assert!(
        first["created_at"].as_u64().is_some_and(|t| t > 0),
        "{first}"
    );
    let mut expected = json!({"id": "s-a", "title": null, "source": "api",
        "updated_at": 300, "message_count": 2});
    expected["created_at"] = first["created_at"].clone();
    assert_eq!(first, &expected);

    let (_, page) = call(&app, Method::GET, "/api/sessions?limit=2", KEY, None).await;
    assert_eq!(
        (ids(&page), &page["has_more"]),
        (vec!["s-a", "s-c"], &json!(true))
    );
    let path = "/api/sessions?limit=2&after=s-c";
    let (_, page) = call(&app, Method::GET, path, KEY, None).await;
    assert_eq!(
        (ids(&page), &page["has_more"]),
        (vec!["s-b"], &json!(false))
    );
    let (_, page) = call(&app, Method::GET, "/api/sessions", BOB, None).await;
    assert_eq!(ids(&page), vec!["s-bob"]);

    for bad in ["0", "101", "ten", "-1"] {
        let path = format!("/api/sessions?limit={bad}");
        let (status, b) = call(&app, Method::GET, &path, KEY, None).await;
        assert_error(status, &b, 400, None, Some("limit"));
    }
    // Paging after an unknown session, or after another key's.
    for after in ["nope", "s-bob"] {
        let path = format!("/api/sessions?after={after}");
        let (status, b) = call(&app, Method::GET, &path, KEY, None).await;
        assert_error(status, &b, 400, None, Some("after"));
    }
}

#[actix_web::test]
async fn a_session_shows_its_messages_and_is_renamed_and_deleted() {
    let slow = Reply::text_stream(
        &["slow"],
        Duration::from_millis(300),
        Duration::ZERO,
        (1, 1),
    );
    let app = app(vec![answer("Hello Ada."), slow]).await;
    assert_eq!(turn(&app, KEY, "ada", "I am Ada").await, 200);
    // A turn with a tool call, written as a run would write it.
    let call_msg = Message::assistant_tool_calls(
        "",
        vec![ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "read_file".into(),
                arguments: r#"{"path":"notes.txt"}"#.into(),
            },
        }],
    );
    let tools = vec![
        Message::user("Read my notes"),
        call_msg,
        Message::tool_result("call_1", "buy milk"),
        Message::assistant("Buy milk."),
    ];
    hermes::sessions::append(
        &app.state.store,
        "api:tools",
        tools,
        Usage::default(),
        Some("default".into()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let (status, s) = call(&app, Method::GET, "/api/sessions/ada", KEY, None).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (&s["id"], &s["source"], &s["message_count"]),
        (&json!("ada"), &json!("api"), &json!(2))
    );
    let msgs = s["messages"].as_array().cloned().unwrap_or_default();
    let shown: Vec<(&str, &str)> = msgs
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or(""),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![("user", "I am Ada"), ("assistant", "Hello Ada.")]
    );
    for m in &msgs {
        assert!(m["created_at"].as_u64().is_some_and(|t| t > 0), "{m}");
        assert!(
            m.get("tool_calls").is_none() && m.get("tool_call_id").is_none(),
            "{m}"
        );
    }
    let (_, t) = call(&app, Method::GET, "/api/sessions/tools", KEY, None).await;
    assert_eq!(
        t["messages"][1]["tool_calls"][0]["function"]["name"], "read_file",
        "{t}"
    );
    assert_eq!(t["messages"][2]["tool_call_id"], "call_1", "{t}");
    assert_eq!(t["messages"][2]["content"], "buy milk", "{t}");

    let rename = Some(json!({"title": "Ada's chat"}));
    let (status, r) = call(&app, Method::PATCH, "/api/sessions/ada", KEY, rename).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (&r["id"], &r["title"]),
        (&json!("ada"), &json!("Ada's chat"))
    );
    assert_eq!(r["updated_at"], s["updated_at"], "a rename is not a turn");
    let (_, s) = call(&app, Method::GET, "/api/sessions/ada", KEY, None).await;
    assert_eq!(s["title"], "Ada's chat");
    for bad in [
        json!({}),
        json!({"title": 5}),
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
    ] {
        let (status, b) = call(&app, Method::PATCH, "/api/sessions/ada", KEY, Some(bad)).await;
        assert_error(status, &b, 400, None, Some("title"));
    }

    // Not while a turn runs in it: the turn would write it again.
    let mut running = client()
        .post(app.url("/api/sessions/ada/chat"))
        .bearer_auth(KEY)
        .send_json(&chat_body("Still there?", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, b) = call(&app, Method::DELETE, "/api/sessions/ada", KEY, None).await;
    assert_error(status, &b, 409, Some("session_busy"), None);
    let (_, events) = sse(&mut running).await;
    assert_eq!(content(&chunks(&events)), "slow");

    let (status, d) = call(&app, Method::DELETE, "/api/sessions/ada", KEY, None).await;
    assert_eq!((status, d), (200, json!({"id": "ada", "deleted": true})));
    let (status, b) = call(&app, Method::GET, "/api/sessions/ada", KEY, None).await;
    assert_error(status, &b, 404, Some("session_not_found"), None);
    let (status, b) = call(&app, Method::DELETE, "/api/sessions/ada", KEY, None).await;
    assert_error(status, &b, 404, Some("session_not_found"), None);
    let rename = Some(json!({"title": "again"}));
    let (status, b) = call(&app, Method::PATCH, "/api/sessions/ada", KEY, rename).await;
    assert_error(status, &b, 404, Some("session_not_found"), None);
    let (status, b) = call(&app, Method::GET, "/api/sessions/never-was", KEY, None).await;
    assert_error(status, &b, 404, Some("session_not_found"), None);
}

#[actix_web::test]
async fn chat_in_a_session_continues_its_stored_history() {
    let app = app(vec![
        answer("Hello Ada."),
        answer("You are Ada."),
        Reply::text_stream(&["Still ", "Ada."], Duration::ZERO, Duration::ZERO, (1, 2)),
    ])
    .await;
    assert_eq!(turn(&app, KEY, "trip", "I am Ada").await, 200);
    let res = client()
        .post(app.url("/api/sessions/trip/chat"))
        .bearer_auth(KEY)
        .send_json(&chat_body("Who am I?", false))
        .await;
    let mut res = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let sid = res
        .headers()
        .get("x-hermes-session-id")
        .and_then(|v| v.to_str().ok());
    assert_eq!(sid, Some("trip"));
    let b = body(&mut res).await;
    assert_eq!(b["object"], "chat.completion", "{b}");
    assert_eq!(b["choices"][0]["message"]["content"], "You are Ada.", "{b}");
    let seen = |i: usize| turns(&app.fake.requests()[i].body["messages"]);
    let who = |r: &str, t: &str| (r.to_string(), t.to_string());
    assert_eq!(
        seen(1),
        vec![
            who("user", "I am Ada"),
            who("assistant", "Hello Ada."),
            who("user", "Who am I?")
        ]
    );

    let mut res = client()
        .post(app.url("/api/sessions/trip/chat"))
        .bearer_auth(KEY)
        .send_json(&chat_body("And now?", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let (raw, events) = sse(&mut res).await;
    assert_eq!(content(&chunks(&events)), "Still Ada.", "{raw}");
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");
    assert_eq!(seen(2).len(), 5, "{:?}", seen(2));
    let (_, s) = call(&app, Method::GET, "/api/sessions/trip", KEY, None).await;
    assert_eq!(s["message_count"], 6, "{s}");

    let body = Some(chat_body("hi", false));
    let (status, b) = call(&app, Method::POST, "/api/sessions/nope/chat", KEY, body).await;
    assert_error(status, &b, 404, Some("session_not_found"), None);
    assert_eq!(
        app.fake.requests().len(),
        3,
        "an unknown session never reaches the model"
    );
}

#[actix_web::test]
async fn other_keys_get_404_and_admin_keys_see_every_session() {
    let app = app(vec![answer("Hello."), answer("Admin here.")]).await;
    assert_eq!(turn(&app, KEY, "mine", "hi").await, 200);
    let platform = vec![
        Message::user("hello bot"),
        Message::assistant("hello human"),
    ];
    hermes::sessions::append(
        &app.state.store,
        "telegram:42",
        platform,
        Usage::default(),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let chat = || Some(chat_body("let me in", false));
    let rename = || Some(json!({"title": "taken"}));
    for (key, id) in [(BOB, "mine"), (BOB, "telegram:42"), (KEY, "telegram:42")] {
        let path = format!("/api/sessions/{id}");
        for (method, b) in [
            (Method::GET, None),
            (Method::PATCH, rename()),
            (Method::DELETE, None),
        ] {
            let (status, b) = call(&app, method.clone(), &path, key, b).await;
            assert_error(status, &b, 404, Some("session_not_found"), None);
        }
        let (status, b) = call(&app, Method::POST, &format!("{path}/chat"), key, chat()).await;
        assert_error(status, &b, 404, Some("session_not_found"), None);
    }
    let (_, page) = call(&app, Method::GET, "/api/sessions", BOB, None).await;
    assert!(ids(&page).is_empty(), "{page}");
    let (_, page) = call(&app, Method::GET, "/api/sessions", KEY, None).await;
    assert_eq!(ids(&page), vec!["mine"]);

    set_updated(&app, &[("api:mine", 100), ("telegram:42", 200)]).await;
    let (_, page) = call(&app, Method::GET, "/api/sessions", ROOT, None).await;
    assert_eq!(ids(&page), vec!["telegram:42", "mine"]);
    assert_eq!(page["data"][0]["source"], "telegram");
    let (status, t) = call(&app, Method::GET, "/api/sessions/telegram:42", ROOT, None).await;
    assert_eq!(
        (status, &t["messages"][1]["content"]),
        (200, &json!("hello human"))
    );
    let (status, b) = call(
        &app,
        Method::POST,
        "/api/sessions/telegram:42/chat",
        ROOT,
        chat(),
    )
    .await;
    assert_error(status, &b, 409, Some("session_not_api"), None);

    let (status, _) = call(&app, Method::PATCH, "/api/sessions/mine", ROOT, rename()).await;
    assert_eq!(status, 200);
    let (status, _) = call(&app, Method::POST, "/api/sessions/mine/chat", ROOT, chat()).await;
    assert_eq!(status, 200);
    // Still the owner's session, with the admin's turn in it.
    let (_, s) = call(&app, Method::GET, "/api/sessions/mine", KEY, None).await;
    assert_eq!(
        (&s["title"], &s["message_count"]),
        (&json!("taken"), &json!(4)),
        "{s}"
    );
    assert_eq!(
        app.fake.requests().len(),
        2,
        "refused chats never reach the model"
    );
}

#[actix_web::test]
async fn capabilities_name_the_features_and_the_configuration() {
    let app = spawn_app_with(vec![], |c| c.approvals.mode = ApprovalMode::Ask).await;
    let (status, b) = call(&app, Method::GET, "/v1/capabilities", KEY, None).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["object"], "hermes.capabilities");
    assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(b["approvals_mode"], "ask");
    assert_eq!(b["platforms"], json!([]));
    let features = b["features"].as_object().cloned().unwrap_or_default();
    for f in [
        "runs",
        "run_events_replay",
        "background_responses",
        "response_stream_resume",
        "sessions_api",
        "tool_progress",
        "approvals",
        "idempotency",
    ] {
        assert_eq!(features.get(f), Some(&json!(true)), "{f}: {b}");
    }
    assert!(features.values().all(Value::is_boolean), "{b}");
    let (status, b) = call(
        &app,
        Method::GET,
        "/v1/capabilities",
        "wrong-key-0123456789",
        None,
    )
    .await;
    assert_error(status, &b, 401, None, None);
}
