//! Black-box tests of the Responses API and its durable store: the response
//! object, the streaming event sequence, chaining by id and by conversation
//! name, deletion, `store: false`, truncation, eviction, restarts, and a
//! client leaving mid-stream.

mod api_support;

use std::time::Duration;

use api_support::*;
use hermes::testing::fake_upstream::{FakeUpstream, Reply, ScriptedCall};
use serde_json::{Value, json};

const MS: Duration = Duration::from_millis(1);

async fn create(app: &App, body: Value) -> (u16, Value, Option<String>) {
    let mut res = app
        .post("/v1/responses")
        .send_json(&body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sid = res
        .headers()
        .get("x-hermes-session-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (res.status().as_u16(), body_of(&mut res).await, sid)
}

async fn body_of(res: &mut awc::ClientResponse) -> Value {
    body(res).await
}

async fn get(app: &App, id: &str) -> (u16, Value) {
    let mut res = app
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (res.status().as_u16(), body(&mut res).await)
}

/// Streams a response and returns its last event.
async fn last_event(app: &App, body: Value) -> Value {
    let mut res = app.send("/v1/responses", &body).await;
    let (_, events) = sse(&mut res).await;
    events
        .last()
        .map(|e| serde_json::from_str(&e.data).unwrap_or_default())
        .unwrap_or_default()
}

fn user_texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .skip(1)
                .map(|x| x["content"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The keys every response object has.
const KEYS: &[&str] = &[
    "id",
    "object",
    "created_at",
    "status",
    "completed_at",
    "error",
    "incomplete_details",
    "instructions",
    "model",
    "output",
    "output_text",
    "parallel_tool_calls",
    "previous_response_id",
    "store",
    "temperature",
    "top_p",
    "max_output_tokens",
    "tool_choice",
    "tools",
    "truncation",
    "metadata",
    "text",
    "reasoning",
    "user",
    "usage",
];

#[actix_web::test]
async fn a_plain_response_has_every_key_and_is_stored() {
    let app = spawn_app(vec![Reply::text_stream(
        &["Hello", " there"],
        MS,
        MS,
        (37, 11),
    )])
    .await;
    let (status, r, sid) = create(
        &app,
        json!({"model": "hermes-agent", "input": "hi", "instructions": "Be kind."}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    for k in KEYS {
        assert!(r.get(*k).is_some(), "{k} missing in {r}");
    }
    assert!(sid.is_some());
    assert!(r["id"].as_str().unwrap_or("").starts_with("resp_"));
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert!(r["completed_at"].as_u64().is_some());
    assert_eq!(r["instructions"], "Be kind.");
    assert_eq!(r["output_text"], "Hello there");
    assert_eq!(r["output"].as_array().map(Vec::len), Some(1));
    let msg = &r["output"][0];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["status"], "completed");
    assert!(msg["id"].as_str().unwrap_or("").starts_with("msg_"));
    assert_eq!(
        msg["content"],
        json!([{"type":"output_text","text":"Hello there","annotations":[]}])
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,
               "output_tokens_details":{"reasoning_tokens":0},"total_tokens":48})
    );
    assert_eq!(r["truncation"], "disabled");
    assert_eq!(r["store"], true);
    let up = &app.fake.requests()[0].body;
    assert!(
        up["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .ends_with("Be kind."),
        "instructions layered"
    );
    let (code, got) = get(&app, r["id"].as_str().unwrap_or("")).await;
    assert_eq!(code, 200);
    assert_eq!(got, r, "GET returns the stored object");
}

fn tool_script() -> Vec<Reply> {
    vec![
        Reply::tool_stream(
            &[ScriptedCall::new(
                "call_1",
                "terminal",
                json!({"command": "echo out-1"}),
            )],
            (5, 5),
        ),
        Reply::text_stream(&["It said out-1."], MS, MS, (6, 6)),
    ]
}

fn kinds(r: &Value) -> Vec<&str> {
    r["output"]
        .as_array()
        .map(|o| o.iter().filter_map(|i| i["type"].as_str()).collect())
        .unwrap_or_default()
}

#[actix_web::test]
async fn tools_the_agent_ran_are_mcp_calls_before_the_message() {
    let app = spawn_app(tool_script()).await;
    let (status, r, _) = create(&app, json!({"input": "run it"})).await;
    assert_eq!(status, 200, "{r}");
    // A `function_call` would mean "client, run this": agent libraries would try.
    assert_eq!(kinds(&r), vec!["mcp_call", "message"]);
    let call = &r["output"][0];
    assert!(call["id"].as_str().unwrap_or("").starts_with("mcp_"));
    assert_eq!(call["server_label"], "hermes");
    assert_eq!(call["name"], "terminal");
    assert_eq!(
        call["arguments"],
        json!({"command": "echo out-1"}).to_string()
    );
    assert!(
        call["output"].as_str().unwrap_or("").contains("out-1"),
        "{call}"
    );
    assert_eq!(call["error"], Value::Null);
    assert_eq!(call["status"], "completed");
    assert_eq!(r["output_text"], "It said out-1.");
    assert_eq!(r["usage"]["total_tokens"], 22);
}

#[actix_web::test]
async fn the_tool_item_shape_is_chosen_by_config_or_header() {
    let app = spawn_app_with(
        [tool_script(), tool_script(), tool_script()].concat(),
        |c| c.api_server.responses_tool_items = hermes::config::ToolItems::FunctionCall,
    )
    .await;
    // The reference's shape, from the configuration.
    let (status, r, _) = create(&app, json!({"input": "run it"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        kinds(&r),
        vec!["function_call", "function_call_output", "message"]
    );
    let fc = &r["output"][0];
    assert_eq!(fc["call_id"], "call_1");
    assert!(fc["id"].as_str().unwrap_or("").starts_with("fc_"));
    assert_eq!(r["output"][1]["call_id"], "call_1");
    assert!(
        r["output"][1]["output"]
            .as_str()
            .unwrap_or("")
            .contains("out-1")
    );
    assert!(
        r["output"][1]["id"]
            .as_str()
            .unwrap_or("")
            .starts_with("fco_")
    );
    // The header wins for one request.
    for (value, expect) in [
        ("none", vec!["message"]),
        ("mcp_call", vec!["mcp_call", "message"]),
    ] {
        let mut res = app
            .post("/v1/responses")
            .insert_header(("X-Hermes-Tool-Items", value))
            .send_json(&json!({"input": "run it"}))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = body_of(&mut res).await;
        assert_eq!(kinds(&r), expect, "{value}");
    }
    let mut res = app
        .post("/v1/responses")
        .insert_header(("X-Hermes-Tool-Items", "everything"))
        .send_json(&json!({"input": "run it"}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 400);
    assert_eq!(
        body_of(&mut res).await["error"]["param"],
        "X-Hermes-Tool-Items"
    );
}

#[actix_web::test]
async fn streaming_follows_the_event_sequence() {
    let app = spawn_app(vec![Reply::text_stream(&["Hel", "lo"], MS, MS, (3, 2))]).await;
    let mut res = app
        .post("/v1/responses")
        .send_json(&json!({"input": "hi", "stream": true}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let (raw_text, events) = sse(&mut res).await;
    assert!(
        !raw_text.contains("[DONE]"),
        "no [DONE] on Responses streams"
    );
    let payloads: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or_default())
        .collect();
    for (e, p) in events.iter().zip(&payloads) {
        assert_eq!(
            e.event.as_deref(),
            p["type"].as_str(),
            "event: line equals type"
        );
    }
    let types: Vec<&str> = payloads.iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(
        types,
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(
            p["sequence_number"], i,
            "sequence numbers rise by one from 0"
        );
    }
    assert_eq!(payloads[0]["response"]["status"], "in_progress");
    assert_eq!(payloads[0]["response"]["output"], json!([]));
    let added = &payloads[2]["item"];
    assert_eq!(added["status"], "in_progress");
    assert_eq!(added["content"], json!([]));
    assert_eq!(
        payloads[3]["part"],
        json!({"type":"output_text","text":"","annotations":[]})
    );
    assert_eq!(payloads[4]["delta"], "Hel");
    assert_eq!(payloads[4]["logprobs"], json!([]));
    assert_eq!(payloads[4]["item_id"], added["id"]);
    assert_eq!(payloads[6]["text"], "Hello");
    assert_eq!(
        payloads[8]["item"]["id"], added["id"],
        "added and done name the same item"
    );
    assert_eq!(payloads[8]["item"]["status"], "completed");
    let completed = &payloads[9]["response"];
    assert_eq!(completed["status"], "completed");
    let (_, stored) = get(&app, completed["id"].as_str().unwrap_or("")).await;
    assert_eq!(
        &stored, completed,
        "response.completed carries what GET returns"
    );
}

#[actix_web::test]
async fn streamed_tools_follow_openais_mcp_call_events() {
    let app = spawn_app(vec![
        Reply::tool_stream(
            &[ScriptedCall::new("c9", "todo", json!({"items": []}))],
            (1, 1),
        ),
        Reply::text_stream(&["done"], MS, MS, (1, 1)),
    ])
    .await;
    let mut res = app
        .send("/v1/responses", &json!({"input": "plan", "stream": true}))
        .await;
    let (_, events) = sse(&mut res).await;
    let payloads: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or_default())
        .collect();
    let kinds: Vec<&str> = payloads
        .iter()
        .filter_map(|p| p["type"].as_str())
        .filter(|t| {
            !t.starts_with("response.output_text") && !t.starts_with("response.content_part")
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.mcp_call.in_progress",
            "response.mcp_call_arguments.delta",
            "response.mcp_call_arguments.done",
            "response.mcp_call.completed",
            "response.output_item.done",
            "response.output_item.added",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let of = |t: &str| {
        payloads
            .iter()
            .find(|p| p["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    // pydantic-ai builds the arguments from the deltas: the added item has none.
    let added = of("response.output_item.added");
    assert_eq!(added["item"]["type"], "mcp_call");
    assert_eq!(added["item"]["arguments"], "");
    assert_eq!(added["item"]["status"], "in_progress");
    assert_eq!(added["item"]["output"], Value::Null);
    let id = added["item"]["id"].clone();
    let args = json!({"items": []}).to_string();
    assert_eq!(of("response.mcp_call_arguments.delta")["delta"], args);
    assert_eq!(of("response.mcp_call_arguments.delta")["item_id"], id);
    assert_eq!(of("response.mcp_call_arguments.done")["arguments"], args);
    assert_eq!(of("response.mcp_call.completed")["item_id"], id);
    let done = of("response.output_item.done");
    assert_eq!(done["item"]["id"], id);
    assert_eq!(done["item"]["status"], "completed");
    assert_eq!(done["item"]["arguments"], args);
    for (n, p) in payloads.iter().enumerate() {
        assert_eq!(p["sequence_number"], n, "sequence numbers rise by one");
    }
    let last = payloads.last().cloned().unwrap_or_default();
    for p in payloads
        .iter()
        .filter(|p| p["type"] == "response.output_item.done")
    {
        let idx = p["output_index"].as_u64().unwrap_or(99) as usize;
        assert_eq!(
            last["response"]["output"][idx], p["item"],
            "the final object holds the same items"
        );
    }
}

#[actix_web::test]
async fn previous_response_id_chains_and_inherits_instructions() {
    let app = spawn_app(vec![
        Reply::text_stream(&["Hi Ada."], MS, MS, (1, 1)),
        Reply::text_stream(&["You are Ada."], MS, MS, (1, 1)),
    ])
    .await;
    let (_, first, sid1) = create(
        &app,
        json!({"input": "I am Ada", "instructions": "Answer briefly."}),
    )
    .await;
    let id = first["id"].as_str().unwrap_or("").to_string();
    let (status, second, sid2) = create(
        &app,
        json!({"input": "Who am I?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], json!(id));
    assert_eq!(
        second["instructions"], "Answer briefly.",
        "instructions carry over"
    );
    assert_eq!(sid1, sid2, "the chain is one session");
    let up = &app.fake.requests()[1].body;
    assert_eq!(user_texts(up), vec!["I am Ada", "Hi Ada.", "Who am I?"]);
    assert!(
        up["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .ends_with("Answer briefly.")
    );
    assert_eq!(
        second["output"].as_array().map(Vec::len),
        Some(1),
        "output holds this turn only"
    );

    let (status, err, _) = create(
        &app,
        json!({"input": "x", "previous_response_id": "resp_nope"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        err["error"]["message"],
        "Previous response not found: resp_nope"
    );
    assert_eq!(err["error"]["param"], "previous_response_id");
}

#[actix_web::test]
async fn conversation_names_chain_and_exclude_previous_response_id() {
    let app = spawn_app(vec![
        Reply::text_stream(&["one"], MS, MS, (1, 1)),
        Reply::text_stream(&["two"], MS, MS, (1, 1)),
    ])
    .await;
    let (s, _, _) = create(&app, json!({"input": "first", "conversation": "proj"})).await;
    assert_eq!(s, 200);
    let (s, r, _) = create(
        &app,
        json!({"input": "second", "conversation": {"id": "proj"}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        user_texts(&app.fake.requests()[1].body),
        vec!["first", "one", "second"]
    );
    let (s, e, _) = create(
        &app,
        json!({"input": "x", "conversation": "proj", "previous_response_id": r["id"]}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"]["message"],
        "Cannot use both 'conversation' and 'previous_response_id'"
    );
}

#[actix_web::test]
async fn delete_removes_and_clears_names() {
    let app = spawn_app(vec![
        Reply::text_stream(&["kept"], MS, MS, (1, 1)),
        Reply::text_stream(&["fresh"], MS, MS, (1, 1)),
    ])
    .await;
    let (_, r, _) = create(&app, json!({"input": "remember", "conversation": "c1"})).await;
    let id = r["id"].as_str().unwrap_or("").to_string();
    let mut res = client()
        .delete(app.url(&format!("/v1/responses/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    assert_eq!(
        body(&mut res).await,
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(get(&app, &id).await.0, 404);
    let (s, e) = get(&app, &id).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["message"], format!("Response not found: {id}"));
    let res = client()
        .delete(app.url(&format!("/v1/responses/{id}")))
        .bearer_auth(KEY)
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or(0), 404);
    let (s, _, _) = create(&app, json!({"input": "x", "previous_response_id": id})).await;
    assert_eq!(s, 404);
    // The name pointed at the deleted response: it starts afresh, no 404.
    let (s, _, _) = create(&app, json!({"input": "again", "conversation": "c1"})).await;
    assert_eq!(s, 200);
    assert_eq!(user_texts(&app.fake.requests()[1].body), vec!["again"]);
}

#[actix_web::test]
async fn store_false_leaves_no_trace() {
    let app = spawn_app(vec![
        Reply::text_stream(&["ephemeral"], MS, MS, (1, 1)),
        Reply::text_stream(&["kept"], MS, MS, (1, 1)),
    ])
    .await;
    let (s, r, _) = create(
        &app,
        json!({"input": "x", "store": false, "conversation": "nope"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(r["store"], false);
    assert_eq!(get(&app, r["id"].as_str().unwrap_or("")).await.0, 404);
    // Barrier: a stored response is committed before its 200, so once this
    // one is answered every earlier write would be on disk too.
    let (s, _, _) = create(&app, json!({"input": "y"})).await;
    assert_eq!(s, 200);
    let n = count_rows(&app.home, "responses").await;
    let names = count_rows(&app.home, "conversations").await;
    assert_eq!((n, names), (1, 0), "only the second response is stored");
}

#[actix_web::test]
async fn a_failed_turn_is_502_and_stored_as_failed() {
    let app = spawn_app(vec![
        Reply::error(400, "upstream says no"),
        Reply::error(400, "still no"),
    ])
    .await;
    let (s, e, _) = create(&app, json!({"input": "x"})).await;
    assert_eq!(s, 502);
    assert_eq!(e["error"]["code"], "agent_failed");
    let last = last_event(&app, json!({"input": "x", "stream": true})).await;
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert!(
        last["response"]["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("still no")
    );
    let (_, stored) = get(&app, last["response"]["id"].as_str().unwrap_or("")).await;
    assert_eq!(stored["status"], "failed");
}

#[actix_web::test]
async fn item_inputs_and_function_call_outputs() {
    let app = spawn_app(vec![Reply::text_stream(&["ok"], MS, MS, (1, 1))]).await;
    let input = json!([
        {"type":"message","role":"user","content":[{"type":"input_text","text":"compute"}]},
        {"type":"function_call","call_id":"c7","name":"calc","arguments":"{\"x\":1}"},
        {"type":"function_call_output","call_id":"c7","output":"2"}
    ]);
    let (s, r, _) = create(&app, json!({"input": input})).await;
    assert_eq!(s, 200, "{r}");
    let msgs = app.fake.requests()[0].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(msgs[1]["content"], "compute");
    assert_eq!(msgs[2]["tool_calls"][0]["id"], "c7");
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], "c7");
    assert_eq!(msgs[3]["content"], "2");
    // input_items: newest first, paged.
    let id = r["id"].as_str().unwrap_or("");
    let mut res = app
        .get(&format!("/v1/responses/{id}/input_items?limit=2"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let page = body(&mut res).await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"][0]["type"], "function_call_output");
    assert_eq!(page["has_more"], true);
    let after = page["last_id"].as_str().unwrap_or("").to_string();
    let mut res = app
        .get(&format!("/v1/responses/{id}/input_items?after={after}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rest = body(&mut res).await;
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["data"][0]["type"], "message");
    assert_eq!(rest["has_more"], false);
    let mut res = app
        .get(&format!("/v1/responses/{id}/input_items?order=asc&limit=1"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body(&mut res).await["data"][0]["type"], "message");
    let res = app
        .get(&format!("/v1/responses/{id}/input_items?limit=500"))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or(0), 400);
}

#[actix_web::test]
async fn truncation_auto_keeps_the_last_hundred_messages() {
    let app = spawn_app(vec![Reply::text_stream(&["ok"], MS, MS, (1, 1))]).await;
    let mut input: Vec<Value> = (0..130).map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": format!("m{i}")})).collect();
    input.push(json!({"role":"user","content":"last"}));
    let (s, r, _) = create(&app, json!({"input": input, "truncation": "auto"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["truncation"], "auto");
    let msgs = app.fake.requests()[0].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(msgs.len(), 1 + 100 + 1, "system + 100 history + input");
    assert_eq!(msgs[1]["content"], "m30");
}

#[actix_web::test]
async fn a_chain_of_fifty_survives_a_restart_with_a_cold_cache() {
    let fake = FakeUpstream::start_with(vec![], |r| {
        let n = r.body["messages"].as_array().map_or(0, Vec::len);
        Reply::text_stream(
            &[&format!("answer at {n}")],
            Duration::ZERO,
            Duration::ZERO,
            (1, 1),
        )
    });
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let app = start_in(fake, home.path(), None, |c| {
        c.api_server.response_store.cache_size = 5
    })
    .await;
    let mut prev: Option<String> = None;
    for i in 0..50 {
        let mut req = json!({"input": format!("q{i}")});
        if let Some(p) = &prev {
            req["previous_response_id"] = json!(p);
        }
        let (s, r, _) = create(&app, req).await;
        assert_eq!(s, 200, "{r}");
        prev = r["id"].as_str().map(String::from);
    }
    // Wait until every write reached the database, then restart.
    for _ in 0..200 {
        let n = count_rows(home.path(), "responses").await;
        if n == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
    let fake2 = FakeUpstream::start(vec![Reply::text_stream(&["fifty-one"], MS, MS, (1, 1))]);
    let app2 = start_in(fake2, home.path(), None, |_| {}).await;
    let (s, r, _) = create(&app2, json!({"input": "q50", "previous_response_id": prev})).await;
    assert_eq!(s, 200, "{r}");
    let texts = user_texts(&app2.fake.requests()[0].body);
    assert_eq!(
        texts.len(),
        101,
        "50 turns of two messages, then the new input"
    );
    for i in 0..50 {
        assert_eq!(texts[2 * i], format!("q{i}"));
        assert!(texts[2 * i + 1].starts_with("answer at "));
    }
    assert_eq!(texts[100], "q50");
    assert_eq!(
        get(&app2, prev.as_deref().unwrap_or("")).await.0,
        200,
        "GET from disk after the restart"
    );
}

#[actix_web::test]
async fn eviction_by_capacity_clears_the_conversation_name() {
    let fake = FakeUpstream::start_with(vec![], |_| {
        Reply::text_stream(&["ok"], Duration::ZERO, Duration::ZERO, (1, 1))
    });
    let app = start(fake, |c| c.api_server.response_store.max_responses = 3).await;
    let (_, first, _) = create(&app, json!({"input": "named", "conversation": "old"})).await;
    for i in 0..3 {
        let (s, _, _) = create(&app, json!({"input": format!("filler {i}")})).await;
        assert_eq!(s, 200);
    }
    // The oldest (the named one) was evicted; wait for the store to catch up.
    let id = first["id"].as_str().unwrap_or("").to_string();
    let mut gone = false;
    for _ in 0..100 {
        if get(&app, &id).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the oldest response was evicted");
    let before = app.fake.requests().len();
    let (s, _, _) = create(&app, json!({"input": "next", "conversation": "old"})).await;
    assert_eq!(s, 200, "no 404: the name starts fresh");
    assert_eq!(user_texts(&app.fake.requests()[before].body), vec!["next"]);
}

#[actix_web::test]
async fn a_client_leaving_a_stream_interrupts_it_only_when_not_stored() {
    let app = spawn_app(vec![
        Reply::numbered_stream(100, 10 * MS, 20 * MS),
        Reply::numbered_stream(100, 10 * MS, 20 * MS),
    ])
    .await;
    use tokio::io::AsyncReadExt;
    let mut ids = Vec::new();
    for store in [true, false] {
        let mut s = raw_post(
            app.addr,
            "/v1/responses",
            &json!({"input": "talk", "stream": true, "store": store}),
        )
        .await;
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while got.matches("response.output_text.delta").count() < 6 {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            assert!(n > 0, "stream ended early");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let id_at = got.find("\"id\":\"resp_").unwrap_or(0) + 6;
        ids.push(
            got[id_at..]
                .chars()
                .take_while(|c| *c != '"')
                .collect::<String>(),
        );
        drop(s);
    }
    // Not stored: the upstream request is dropped.
    for _ in 0..150 {
        if !app.fake.disconnects().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.fake.disconnects().len(),
        1,
        "only the unstored one stops"
    );
    // Stored: it runs to the end and is kept whole.
    let mut stored = Value::Null;
    for _ in 0..250 {
        let (code, v) = get(&app, &ids[0]).await;
        if code == 200 && v["status"] != "in_progress" {
            stored = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored["status"], "completed", "{stored}");
    let text = stored["output_text"].as_str().unwrap_or("");
    assert!(
        text.starts_with("w0 w1 w2 ") && text.contains("w99"),
        "{text}"
    );
}

#[actix_web::test]
async fn sampling_parameters_reach_the_model_and_are_echoed() {
    let app = spawn_app(vec![Reply::text_stream(&["{}"], MS, MS, (3, 2))]).await;
    let (s, r, _) = create(
        &app,
        json!({"input": "x", "max_output_tokens": 16, "temperature": 0.3, "top_p": 0.8,
               "reasoning": {"effort": "low"},
               "text": {"format": {"type": "json_object"}}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let sent = &app.fake.requests()[0].body;
    assert_eq!(sent["max_tokens"], 16, "{sent}");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["top_p"], 0.8);
    assert_eq!(sent["reasoning_effort"], "low");
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));
    assert_eq!(sent["tool_choice"], "auto", "tools are sent with a choice");
    assert_eq!(r["max_output_tokens"], 16);
    assert_eq!(r["temperature"], 0.3);
    assert_eq!(r["top_p"], 0.8);
    assert_eq!(r["reasoning"]["effort"], "low");
    assert_eq!(r["text"]["format"]["type"], "json_object");
    assert!(
        r["usage"].get("estimated").is_none(),
        "the server reported usage"
    );

    for (body, param) in [
        (json!({"input": ""}), "input"),
        (json!({"input": "x", "temperature": "hot"}), "temperature"),
        (
            json!({"input": "x", "max_output_tokens": -1}),
            "max_output_tokens",
        ),
        (
            json!({"input": "x", "tools": [{"type": "function"}]}),
            "tools[0]",
        ),
    ] {
        let (s, e, _) = create(&app, body.clone()).await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    assert_eq!(
        app.fake.requests().len(),
        1,
        "refusals never reach the model"
    );
}

#[actix_web::test]
async fn a_context_overflow_is_400_and_a_stream_says_why() {
    let app = spawn_app(vec![
        Reply::error(400, "This model's maximum context length is 2048 tokens"),
        Reply::error(400, "This model's maximum context length is 2048 tokens"),
    ])
    .await;
    let (s, e, _) = create(&app, json!({"input": "x"})).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    let last = last_event(&app, json!({"input": "x", "stream": true})).await;
    assert_eq!(last["response"]["error"]["code"], "context_length_exceeded");
}

#[actix_web::test]
async fn a_response_that_cannot_be_stored_fails_instead_of_completing() {
    if on_postgres() {
        return; // A full disk is made with an SQLite trigger.
    }
    let app = spawn_app(vec![]).await;
    let db =
        rusqlite::Connection::open(app.home.join("state.db")).unwrap_or_else(|e| panic!("{e}"));
    db.execute_batch(
        // The response is written as running first, then once it ended: the
        // second write is the one that fails.
        "CREATE TRIGGER full BEFORE INSERT ON responses WHEN NEW.live = 0 BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (s, e, _) = create(&app, json!({"input": "x"})).await;
    assert_eq!(s, 500, "{e}");
    assert_eq!(e["error"]["code"], "storage_error");
    let last = last_event(&app, json!({"input": "x", "stream": true})).await;
    assert_eq!(last["type"], "response.failed", "{last}");
    assert_eq!(last["response"]["error"]["code"], "storage_error");
    // With store: false nothing is written, so nothing can fail.
    let (s, _, _) = create(&app, json!({"input": "x", "store": false})).await;
    assert_eq!(s, 200);
}

#[actix_web::test]
async fn a_bad_query_string_gets_the_envelope() {
    let app = spawn_app(vec![Reply::completion("ok", "stop", (1, 1))]).await;
    let (_, r, _) = create(&app, json!({"input": "x"})).await;
    let id = r["id"].as_str().unwrap_or("");
    let mut res = app
        .get(&format!("/v1/responses/{id}/input_items?limit=1&limit=2"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 400);
    let b = body_of(&mut res).await;
    assert_eq!(b["error"]["type"], "invalid_request_error", "{b}");
    assert_eq!(b["error"]["param"], "limit", "{b}");
}

#[actix_web::test]
async fn item_references_resolve_to_this_keys_stored_items() {
    let app = spawn_app_with(
        vec![
            Reply::text_stream(&["Hi Ada."], MS, MS, (1, 1)),
            Reply::text_stream(&["You are Ada."], MS, MS, (1, 1)),
        ],
        |c| {
            c.api_server.keys = vec![hermes::config::NamedKey {
                name: "other".into(),
                key: "other-key-0123456789abcdef".into(),
            }]
        },
    )
    .await;
    let (_, r1, _) = create(&app, json!({"input": "I am Ada."})).await;
    let answer_id = r1["output"][0]["id"].as_str().unwrap_or("").to_string();
    // The AI SDK's multi-turn idiom: earlier items by reference, no previous_response_id.
    let second = json!({"input": [
        {"role": "user", "content": "I am Ada."},
        {"type": "item_reference", "id": answer_id},
        {"role": "user", "content": "Who am I?"}
    ]});
    let (s, r2, _) = create(&app, second.clone()).await;
    assert_eq!(s, 200, "{r2}");
    let sent = &app.fake.requests()[1].body["messages"];
    let turns = turns(sent);
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        turns,
        vec![
            pair("user", "I am Ada."),
            pair("assistant", "Hi Ada."),
            pair("user", "Who am I?")
        ]
    );
    // An unknown id, or another key's item, is a 404 naming the item.
    let (s, e, _) = create(
        &app,
        json!({"input": [{"type": "item_reference", "id": "msg_nope"}, "hi"]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["param"], "input[0].id");
    let mut res = client()
        .post(app.url("/v1/responses"))
        .bearer_auth("other-key-0123456789abcdef")
        .send_json(&second)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 404, "{}", body_of(&mut res).await);
    assert_eq!(app.fake.requests().len(), 2);
}

#[actix_web::test]
async fn tool_items_sent_back_are_history_and_calls_are_paired() {
    let app = spawn_app(vec![
        Reply::text_stream(&["ok"], MS, MS, (1, 1)),
        Reply::text_stream(&["ok"], MS, MS, (1, 1)),
    ])
    .await;
    let (s, r, _) = create(
        &app,
        json!({"input": [
            {"type": "mcp_list_tools", "server_label": "hermes", "tools": []},
            {"role": "user", "content": "list"},
            {"type": "mcp_call", "id": "mcp_7", "server_label": "hermes", "name": "terminal",
             "arguments": "{\"command\":\"ls\"}", "output": "a b", "error": null, "status": "completed"},
            {"role": "user", "content": "thanks"}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let sent = app.fake.requests()[0].body["messages"].clone();
    assert_eq!(sent[2]["tool_calls"][0]["id"], "mcp_7");
    assert_eq!(sent[3]["role"], "tool");
    assert_eq!(sent[3]["tool_call_id"], "mcp_7");
    assert_eq!(sent[3]["content"], "a b");

    // A result away from its call is moved next to it; a call without a
    // result is dropped: the model server never sees an unanswered call.
    let (s, r, _) = create(
        &app,
        json!({"input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"role": "user", "content": "in between"},
            {"type": "function_call_output", "call_id": "c1", "output": "r1"}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let sent = app.fake.requests()[1].body["messages"].clone();
    let calls: Vec<&str> = sent[1]["tool_calls"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(calls, vec!["c1"]);
    assert_eq!(sent[2]["tool_call_id"], "c1");
    assert_eq!(sent[3]["content"], "in between");
    assert!(
        sent.as_array().is_some_and(|m| m.len() == 4),
        "nothing else: {sent}"
    );
}

fn ask_mode(c: &mut hermes::config::Config) {
    c.approvals.mode = hermes::config::ApprovalMode::Ask;
    c.approvals.patterns = vec![r"\btouch\b".into()];
}

fn marker_call(id: &str, file: &str) -> Reply {
    Reply::tool_stream(
        &[ScriptedCall::new(
            id,
            "terminal",
            json!({"command": format!("touch {file}")}),
        )],
        (1, 1),
    )
}

#[actix_web::test]
async fn a_dangerous_command_waits_for_the_clients_approval() {
    let app = spawn_app_with(
        vec![
            marker_call("call_a", "approved-marker"),
            Reply::text_stream(&["Made it."], MS, MS, (1, 1)),
            marker_call("call_d", "denied-marker"),
            Reply::text_stream(&["I did not run it."], MS, MS, (1, 1)),
        ],
        ask_mode,
    )
    .await;
    let marker = |f: &str| app.cwd.path().join(f).exists();

    // The turn stops before the command and asks.
    let (s, r1, _) = create(&app, json!({"input": "make the marker"})).await;
    assert_eq!(s, 200, "{r1}");
    assert_eq!(r1["status"], "completed");
    let request = r1["output"]
        .as_array()
        .and_then(|o| o.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(request["type"], "mcp_approval_request", "{r1}");
    assert_eq!(request["server_label"], "hermes");
    assert_eq!(request["name"], "terminal");
    assert!(
        request["arguments"]
            .as_str()
            .unwrap_or("")
            .contains("approved-marker")
    );
    let approval = request["id"].as_str().unwrap_or("").to_string();
    assert!(approval.starts_with("mcpr_"));
    assert!(!marker("approved-marker"), "nothing ran yet");
    assert_eq!(app.fake.requests().len(), 1);

    // Approved with previous_response_id: the command runs, the same turn goes
    // on, and the model is not asked for the call again.
    let answer = json!({"previous_response_id": r1["id"], "input": [
        {"type": "mcp_approval_response", "approval_request_id": approval, "approve": true}]});
    let (s, r2, _) = create(&app, answer.clone()).await;
    assert_eq!(s, 200, "{r2}");
    assert!(marker("approved-marker"));
    assert_eq!(kinds(&r2), vec!["mcp_call", "message"]);
    assert_eq!(r2["output"][0]["approval_request_id"], approval.as_str());
    assert_eq!(r2["output"][0]["status"], "completed");
    assert_eq!(r2["output_text"], "Made it.");
    let reqs = app.fake.requests();
    assert_eq!(reqs.len(), 2, "one more model call: the one after the tool");
    let sent = reqs[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n = sent.len();
    assert_eq!(sent[n - 2]["tool_calls"][0]["id"], "call_a");
    assert_eq!(sent[n - 1]["tool_call_id"], "call_a");

    // An approval is answered once.
    let (s, e, _) = create(&app, answer).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["param"], "input[0].approval_request_id");
    let (s, e, _) = create(
        &app,
        json!({"input": [{"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": true}]}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "input[0].approval_request_id");

    // Denied, the AI SDK's way: the conversation resent, no previous_response_id.
    let (_, r3, _) = create(&app, json!({"input": "make another"})).await;
    let approval = r3["output"][0]["id"].as_str().unwrap_or("").to_string();
    let (s, r4, _) = create(
        &app,
        json!({"input": [
            {"role": "user", "content": "make another"},
            {"type": "item_reference", "id": approval},
            {"type": "mcp_approval_response", "approval_request_id": approval, "approve": false}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{r4}");
    assert!(!marker("denied-marker"), "a denied command does not run");
    assert_eq!(r4["previous_response_id"], r3["id"]);
    let call = &r4["output"][0];
    assert_eq!(call["type"], "mcp_call");
    assert_eq!(call["status"], "failed");
    assert_eq!(call["error"], "The user denied this command.");
    assert_eq!(call["approval_request_id"], approval.as_str());
    assert_eq!(r4["output_text"], "I did not run it.");
    let sent = app.fake.requests()[3].body["messages"].clone();
    let texts: Vec<&str> = sent
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["content"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        texts.iter().filter(|t| **t == "make another").count(),
        1,
        "the resent history is not used twice: {texts:?}"
    );
    assert!(texts.contains(&"The user denied this command."));
}
