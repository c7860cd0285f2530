//! Telegram end to end: the real gateway (in-process, port 0) against the
//! fake Bot API server and the fake model server, both on loopback. Times
//! are read on the fake platform's side, as Telegram would see them.

mod api_support;

use std::time::Duration;

use api_support::{App, start, start_in};
use hermes::config::Config;
use hermes::testing::fake_telegram::{FakeTelegram, Inject, Sent};
use hermes::testing::fake_upstream::{FakeUpstream, Reply, numbered_words};
use serde_json::{Value, json};

const TOKEN: &str = "123456:TEST_TOKEN_abcdefghijklmnopqrstu";
const USER: i64 = 42;
/// No wait in these tests is longer than this.
const LIMIT: Duration = Duration::from_secs(30);

fn telegram(tg: &FakeTelegram, streaming: bool) -> impl FnOnce(&mut Config) {
    let url = tg.url();
    move |c: &mut Config| {
        c.telegram.bot_token = Some(TOKEN.into());
        c.telegram.api_base_url = Some(url);
        c.telegram.allowed_users = vec![USER.to_string()];
        c.api_server.enabled = true;
        c.streaming.enabled = streaming;
    }
}

async fn gateway(script: Vec<Reply>, tg: &FakeTelegram, streaming: bool) -> App {
    start(FakeUpstream::start(script), telegram(tg, streaming)).await
}

/// Waits until the bot's messages in the user's chat satisfy `cond`.
async fn until(tg: &FakeTelegram, cond: impl Fn(&[Sent]) -> bool) -> Vec<Sent> {
    let msgs = tg.wait_for(USER, LIMIT, &cond).await;
    assert!(cond(&msgs), "not seen within {LIMIT:?}: {msgs:?}");
    msgs
}

/// `w0 w1 … w{n-1}` as the chat shows it: rendered from Markdown, so
/// without the trailing space.
fn words(n: usize) -> String {
    numbered_words(n).concat().trim_end().to_string()
}

fn has_text(m: &[Sent], text: &str) -> bool {
    m.iter().any(|s| s.text == text)
}

/// The texts of the user turns (and answers) the upstream saw in its last request.
fn last_request_texts(app: &App) -> Vec<String> {
    let reqs = app.fake.requests();
    let Some(last) = reqs.last() else {
        return Vec::new();
    };
    last.body["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["role"] != "system")
                .map(|m| m["content"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn a_streamed_answer_types_itself_out_in_one_message() {
    let tg = FakeTelegram::start(TOKEN);
    let gap = Duration::from_millis(100);
    let app = gateway(vec![Reply::numbered_stream(60, gap, gap)], &tg, true).await;
    let (_, user_msg) = tg.push_dm(USER, "tell me a story");
    let answer = words(60);
    let msgs = until(&tg, |m| has_text(m, &answer)).await;
    assert_eq!(msgs.len(), 1, "one message, no second send: {msgs:?}");
    let m = &msgs[0];
    assert_eq!(m.text, answer, "the exact final text, without cursor");
    assert_eq!(m.reply_to, Some(user_msg), "a reply to the user's message");
    assert!(
        m.writes.len() >= 3,
        "it typed itself out: {} writes",
        m.writes.len()
    );
    for w in m.writes.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(1500),
            "edits {:?} apart",
            w[1] - w[0]
        );
    }
    // Mid-stream frames carried the cursor; the final one is formatted.
    let edits = tg.calls_of("editMessageText");
    assert!(
        edits
            .iter()
            .any(|c| c.params["text"].as_str().is_some_and(|t| t.ends_with(" ▌")))
    );
    assert_eq!(
        edits.last().map(|c| c.params["parse_mode"].clone()),
        Some(json!("HTML"))
    );
    assert!(!tg.calls_of("sendChatAction").is_empty(), "typing shown");
    drop(app);
}

#[actix_web::test]
async fn with_streaming_off_the_answer_is_sent_once_at_the_end() {
    let tg = FakeTelegram::start(TOKEN);
    let answer = words(40);
    // Without a live preview the model is asked for the whole answer at once.
    let app = gateway(vec![Reply::completion(&answer, "stop", (1, 1))], &tg, false).await;
    tg.push_dm(USER, "hi");
    let msgs = until(&tg, |m| has_text(m, &answer)).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].text, answer);
    assert_eq!(msgs[0].writes.len(), 1, "sent once, never edited");
    assert!(tg.calls_of("editMessageText").is_empty());
    drop(app);
}

#[actix_web::test]
async fn a_long_answer_is_split_within_the_limit() {
    let tg = FakeTelegram::start(TOKEN);
    let paragraph = "lorem ipsum dolor sit amet ".repeat(20);
    let answer: String = (0..19).map(|i| format!("{i}: {paragraph}\n\n")).collect();
    assert!(answer.len() >= 10_000);
    let app = gateway(vec![Reply::completion(&answer, "stop", (1, 1))], &tg, false).await;
    tg.push_dm(USER, "long please");
    let msgs = until(&tg, |m| m.iter().any(|s| s.text.contains("18: lorem"))).await;
    assert!(msgs.len() >= 3, "{} parts", msgs.len());
    for m in &msgs {
        assert!(m.text.encode_utf16().count() <= 4096);
    }
    let parts: Vec<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
    api_support::assert_parts_make_the_answer(&parts, &answer);
    drop(app);
}

#[actix_web::test]
async fn a_flood_of_rate_limits_on_a_send_is_waited_out_and_the_answer_sent_once() {
    let tg = FakeTelegram::start(TOKEN);
    for _ in 0..12 {
        tg.inject("sendMessage", Inject::RateLimit(1));
    }
    let app = gateway(
        vec![Reply::completion("worth the wait", "stop", (1, 1))],
        &tg,
        false,
    )
    .await;
    tg.push_dm(USER, "hello");
    let msgs = until(&tg, |m| !m.is_empty()).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].text, "worth the wait");
    assert_eq!(
        tg.calls_of("sendMessage").len(),
        13,
        "12 rate limits, then the send"
    );
    drop(app);
}

#[actix_web::test]
async fn rate_limited_edits_lose_nothing_and_duplicate_nothing() {
    let tg = FakeTelegram::start(TOKEN);
    tg.inject("editMessageText", Inject::RateLimit(1));
    tg.inject("editMessageText", Inject::RateLimit(1));
    let gap = Duration::from_millis(100);
    let app = gateway(vec![Reply::numbered_stream(60, gap, gap)], &tg, true).await;
    tg.push_dm(USER, "go");
    let answer = words(60);
    let msgs = until(&tg, |m| has_text(m, &answer)).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].text, answer);
    let limited = tg
        .calls_of("editMessageText")
        .len()
        .saturating_sub(msgs[0].writes.len() - 1);
    assert!(limited >= 2, "both 429s were hit");
    drop(app);
}

#[actix_web::test]
async fn a_stranger_is_told_which_variable_lets_them_in() {
    let tg = FakeTelegram::start(TOKEN);
    let app = gateway(
        vec![Reply::completion("barrier", "stop", (1, 1))],
        &tg,
        false,
    )
    .await;
    let stranger = 7;
    tg.push_dm(stranger, "hello?");
    tg.push_dm(stranger, "anyone?");
    tg.push_message(-100, "group", stranger, "hi group");
    // Barrier: a later message from an allowed user is answered, so the
    // stranger's were handled before it.
    tg.push_dm(USER, "hi");
    until(&tg, |m| has_text(m, "barrier")).await;
    let msgs = tg.messages(stranger);
    assert_eq!(msgs.len(), 1, "one reply per hour: {msgs:?}");
    assert_eq!(
        msgs[0].text,
        "This bot is private. Ask its operator to add your user id 7 to TELEGRAM_ALLOWED_USERS."
    );
    assert!(
        tg.messages(-100).is_empty(),
        "a stranger in a group is ignored silently"
    );
    assert_eq!(
        app.fake.requests().len(),
        1,
        "only the allowed user reached the model"
    );
}

#[actix_web::test]
async fn the_same_message_delivered_twice_is_handled_once() {
    let tg = FakeTelegram::start(TOKEN);
    let app = gateway(
        vec![
            Reply::completion("once", "stop", (1, 1)),
            Reply::completion("twice", "stop", (1, 1)),
        ],
        &tg,
        false,
    )
    .await;
    let update = json!({"update_id": 500, "message": {"message_id": 77, "from": {"id": USER},
        "chat": {"id": USER, "type": "private"}, "text": "hi"}});
    tg.push_raw(update.clone());
    until(&tg, |m| has_text(m, "once")).await;
    // Redelivered under a new update id (a reconnect, a webhook retry).
    let mut again = update;
    again["update_id"] = json!(501);
    tg.push_raw(again);
    // Barrier: the next message is answered (with the second reply), so the
    // redelivery was handled before it.
    tg.push_raw(
        json!({"update_id": 502, "message": {"message_id": 78, "from": {"id": USER},
        "chat": {"id": USER, "type": "private"}, "text": "next"}}),
    );
    until(&tg, |m| has_text(m, "twice")).await;
    assert_eq!(app.fake.requests().len(), 2);
    let seen = last_request_texts(&app);
    assert_eq!(seen.last().map(String::as_str), Some("next"), "{seen:?}");
    assert_eq!(seen.iter().filter(|t| *t == "hi").count(), 1, "{seen:?}");
}

#[actix_web::test]
async fn a_restart_keeps_the_conversation_and_the_offset() {
    let tg = FakeTelegram::start(TOKEN);
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    {
        let fake = FakeUpstream::start(vec![Reply::completion("nice to meet you", "stop", (1, 1))]);
        let app = start_in(fake, home.path(), None, telegram(&tg, false)).await;
        tg.push_dm(USER, "my name is Ada");
        until(&tg, |m| has_text(m, "nice to meet you")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.stop().await;
    }
    let fake = FakeUpstream::start(vec![Reply::completion("you are Ada", "stop", (1, 1))]);
    let app = start_in(fake, home.path(), None, telegram(&tg, false)).await;
    tg.push_dm(USER, "what is my name?");
    until(&tg, |m| has_text(m, "you are Ada")).await;
    assert_eq!(
        last_request_texts(&app),
        vec!["my name is Ada", "nice to meet you", "what is my name?"]
    );
    assert_eq!(
        app.fake.requests().len(),
        1,
        "the first message was not handled again"
    );
    // Every poll after the first carried an offset past the handled updates.
    let polls = tg.calls_of("getUpdates");
    assert!(
        polls
            .iter()
            .skip(1)
            .all(|c| c.params["offset"].as_i64().is_some_and(|o| o > 100))
    );
}

#[actix_web::test]
async fn a_bad_token_fails_telegram_only() {
    let tg = FakeTelegram::start("999:another-token");
    let app = gateway(
        vec![Reply::completion("api works", "stop", (1, 1))],
        &tg,
        false,
    )
    .await;
    let mut detail = Value::Null;
    for _ in 0..100 {
        let mut r = app
            .get("/health/detailed")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        detail = r.json().await.unwrap_or_default();
        if detail["platforms"]["telegram"]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tg_state = &detail["platforms"]["telegram"];
    assert_eq!(tg_state["state"], "failed", "{detail}");
    let why = tg_state["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("TELEGRAM_BOT_TOKEN") && !why.contains("TEST_TOKEN"),
        "{why}"
    );
    let mut r = app
        .post("/v1/chat/completions")
        .send_json(
            &json!({"model": "hermes-agent", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(body["choices"][0]["message"]["content"], "api works");
}

#[actix_web::test]
async fn the_webhook_needs_its_secret() {
    let tg = FakeTelegram::start(TOKEN);
    let url = tg.url();
    let app = start(
        FakeUpstream::start(vec![Reply::completion("via webhook", "stop", (1, 1))]),
        move |c| {
            c.telegram.bot_token = Some(TOKEN.into());
            c.telegram.api_base_url = Some(url);
            c.telegram.allowed_users = vec![USER.to_string()];
            c.telegram.webhook_url = Some("https://bot.example.com/hooks/telegram".into());
            c.telegram.webhook_secret = Some("s3cret-value".into());
        },
    )
    .await;
    for _ in 0..100 {
        if !tg.calls_of("setWebhook").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let set = tg.calls_of("setWebhook");
    assert_eq!(set[0].params["secret_token"], "s3cret-value");
    let update = json!({"update_id": 1, "message": {"message_id": 5, "from": {"id": USER},
        "chat": {"id": USER, "type": "private"}, "text": "hook"}});
    let client = api_support::client();
    let r = client
        .post(app.url("/hooks/telegram"))
        .insert_header(("X-Telegram-Bot-Api-Secret-Token", "wrong"))
        .send_json(&update)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);
    let r = client
        .post(app.url("/hooks/telegram"))
        .insert_header(("X-Telegram-Bot-Api-Secret-Token", "s3cret-value"))
        .send_json(&update)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    until(&tg, |m| has_text(m, "via webhook")).await;
    assert!(
        tg.calls_of("getUpdates").is_empty(),
        "no polling in webhook mode"
    );
}

#[actix_web::test]
async fn the_home_channel_hears_that_the_gateway_is_online() {
    let tg = FakeTelegram::start(TOKEN);
    let base = telegram(&tg, false);
    let app = start(FakeUpstream::start(vec![]), move |c: &mut Config| {
        base(c);
        c.telegram.home_channel = Some("-500".into());
    })
    .await;
    let msgs = tg.wait_for(-500, LIMIT, |m| !m.is_empty()).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].text.contains("is online"), "{msgs:?}");
    drop(app);
}
