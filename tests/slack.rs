//! Slack end to end: the real gateway (in-process, port 0) against the fake
//! Slack (Web API and Socket Mode websocket) and the fake model server, all
//! on loopback. Times are read on the fake platform's side.

mod api_support;

use std::time::Duration;

use api_support::{App, start, user_turns};
use hermes::config::Config;
use hermes::testing::fake_slack::{BOT_USER, FakeSlack, Inject, Sent, TEAM, UserMessage};
use hermes::testing::fake_upstream::{FakeUpstream, Reply, numbered_words};
use serde_json::{Value, json};

const BOT_TOKEN: &str = "xoxb-1111-2222-fakebottoken";
const APP_TOKEN: &str = "xapp-1-A0FAKE-3333-fakeapptoken";
const USER: &str = "U0USER01";
const DM: &str = "D0DM0001";
const CHANNEL: &str = "C0CHAN01";
/// No wait in these tests is longer than this.
const LIMIT: Duration = Duration::from_secs(30);
/// Slack wants every envelope acknowledged within this.
const ACK_DEADLINE: Duration = Duration::from_secs(3);

fn slack(s: &FakeSlack, streaming: bool) -> impl FnOnce(&mut Config) {
    let url = s.api_url();
    move |c: &mut Config| {
        c.slack.bot_token = Some(BOT_TOKEN.into());
        c.slack.app_token = Some(APP_TOKEN.into());
        c.slack.api_base_url = Some(url);
        c.slack.allowed_users = vec![USER.to_string()];
        c.api_server.enabled = true;
        c.streaming.enabled = streaming;
    }
}

async fn gateway(script: Vec<Reply>, s: &FakeSlack, streaming: bool) -> App {
    let app = start(FakeUpstream::start(script), slack(s, streaming)).await;
    state_is(&app, "connected").await;
    app
}

fn answer(text: &str) -> Reply {
    Reply::completion(text, "stop", (1, 1))
}

/// `w0 w1 … w{n-1} ` as the model streams it.
fn words(n: usize) -> String {
    numbered_words(n).concat()
}

fn dm(text: &str, ts: &str) -> UserMessage {
    UserMessage {
        channel: DM.into(),
        channel_type: "im".into(),
        user: USER.into(),
        text: text.into(),
        ts: ts.into(),
        thread_ts: None,
    }
}

fn in_channel(text: &str, ts: &str, thread_ts: Option<&str>) -> UserMessage {
    UserMessage {
        channel: CHANNEL.into(),
        channel_type: "channel".into(),
        user: USER.into(),
        text: text.into(),
        ts: ts.into(),
        thread_ts: thread_ts.map(String::from),
    }
}

async fn state_is(app: &App, state: &str) -> Value {
    api_support::platform_state_is(app, "slack", state).await
}

/// Waits until the bot's messages in `channel` satisfy `cond`.
async fn until(s: &FakeSlack, channel: &str, cond: impl Fn(&[Sent]) -> bool) -> Vec<Sent> {
    let seen = s.wait(LIMIT, |f| cond(&f.messages(channel))).await;
    let msgs = s.messages(channel);
    assert!(seen, "not seen within {LIMIT:?}: {msgs:?}");
    msgs
}

fn texts(m: &[Sent]) -> Vec<&str> {
    m.iter().map(|s| s.text.as_str()).collect()
}

/// Every ack came within Slack's 3 s.
fn assert_acks_in_time(s: &FakeSlack) {
    for a in s.acks() {
        assert!(a.after < ACK_DEADLINE, "acked after {:?}", a.after);
    }
}

#[actix_web::test]
async fn a_dm_streams_natively_in_the_message_thread_with_a_status_meanwhile() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let gap = Duration::from_millis(60);
    let app = gateway(vec![Reply::numbered_stream(100, gap, gap)], &s, true).await;
    s.push_message(dm("tell me a story", "1700000001.000100"));
    let full = words(100);
    let msgs = until(&s, DM, |m| m.iter().any(|x| x.stopped)).await;
    assert_eq!(msgs.len(), 1, "one streaming message: {msgs:?}");
    let m = &msgs[0];
    assert!(m.streamed);
    assert_eq!(m.text.trim_end(), full.trim_end());
    assert_eq!(m.thread_ts.as_deref(), Some("1700000001.000100"));
    let start = s.calls_of("chat.startStream");
    assert_eq!(start.len(), 1);
    assert_eq!(start[0].body["recipient_user_id"], USER);
    assert_eq!(start[0].body["recipient_team_id"], TEAM);
    // Appends carry only the new text, at most one call per interval.
    let appends = s.calls_of("chat.appendStream");
    assert!(appends.len() >= 2, "{appends:?}");
    let mut joined = start[0].body["markdown_text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for a in &appends {
        joined.push_str(a.body["markdown_text"].as_str().unwrap_or_default());
    }
    let stop = s.calls_of("chat.stopStream");
    joined.push_str(stop[0].body["markdown_text"].as_str().unwrap_or_default());
    assert_eq!(joined, m.text);
    let mut paced: Vec<_> = start.iter().chain(&appends).map(|c| c.at).collect();
    paced.sort();
    for w in paced.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(1400),
            "{:?}",
            w[1] - w[0]
        );
    }
    assert!(s.calls_of("chat.postMessage").is_empty());
    // The status showed while the turn ran and was cleared after.
    let cleared = s
        .wait(LIMIT, |f| {
            f.statuses().last().is_some_and(|x| x.status.is_empty())
        })
        .await;
    let st = s.statuses();
    assert!(cleared, "{st:?}");
    assert_eq!(st[0].status, "is thinking…");
    assert_eq!(st[0].thread_ts, "1700000001.000100");
    // The bot's own message came back as an event and was not a turn.
    s.push_message(dm("and then?", "1700000002.000100"));
    until(&s, DM, |m| m.len() == 2).await;
    assert_eq!(user_turns(&app), ["tell me a story", "and then?"]);
    assert_acks_in_time(&s);
    drop(app);
}

#[actix_web::test]
async fn in_channels_mentions_start_a_thread_the_bot_then_follows() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let app = gateway(
        vec![answer("first"), answer("second"), answer("third")],
        &s,
        false,
    )
    .await;
    s.push_message(in_channel("anyone?", "100.1", None));
    let mention = format!("<@{BOT_USER}> what is 2+2 &amp; why");
    // Slack sends a mention both as `message` and as `app_mention`.
    s.push_message(in_channel(&mention, "100.2", None));
    s.push_mention(in_channel(&mention, "100.2", None));
    let msgs = until(&s, CHANNEL, |m| m.len() == 1).await;
    assert_eq!(msgs[0].text, "first");
    assert_eq!(msgs[0].thread_ts.as_deref(), Some("100.2"));
    // In that thread no mention is needed; elsewhere it still is.
    s.push_message(in_channel("and 3+3?", "100.3", Some("100.2")));
    until(&s, CHANNEL, |m| m.len() == 2).await;
    s.push_message(in_channel("not for you", "100.4", Some("99.0")));
    s.push_message(in_channel(
        &format!("<@{BOT_USER}> new topic"),
        "100.5",
        None,
    ));
    let msgs = until(&s, CHANNEL, |m| m.len() == 3).await;
    assert_eq!(msgs[2].thread_ts.as_deref(), Some("100.5"));
    assert_eq!(
        user_turns(&app),
        ["what is 2+2 & why", "and 3+3?", "new topic"]
    );
    // The thread's second turn saw its first (one session per thread); the
    // new thread did not.
    let reqs = app.fake.requests();
    let history = |i: usize| reqs[i].body["messages"].as_array().map_or(0, Vec::len);
    assert!(history(1) > history(0), "the thread kept its history");
    assert_eq!(history(2), history(0), "a new thread is a new session");
    drop(app);
}

#[actix_web::test]
async fn bots_edits_and_redeliveries_never_start_a_turn_and_every_envelope_is_acked() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let app = gateway(vec![answer("one"), answer("two")], &s, false).await;
    s.push_message(dm("hello", "200.1"));
    until(&s, DM, |m| m.len() == 1).await;
    // The same message again (a redelivery), a bot, an edit, an unknown
    // envelope type: none is a turn, all are acknowledged.
    s.push_message(dm("hello", "200.1"));
    s.push_event(
        json!({"type": "message", "channel": DM, "channel_type": "im",
        "user": "U0OTHER", "bot_id": "B0OTHER", "text": "beep", "ts": "200.2"}),
    );
    s.push_event(
        json!({"type": "message", "subtype": "message_changed", "channel": DM,
        "channel_type": "im", "message": {"text": "hello!"}, "ts": "200.3"}),
    );
    s.push_envelope(json!({"envelope_id": "unknown-1", "type": "brand_new_thing", "payload": {}}));
    for i in 0..40 {
        s.push_event(
            json!({"type": "reaction_added", "user": USER, "reaction": "eyes",
            "item": {"type": "message", "channel": DM, "ts": format!("300.{i}")}}),
        );
    }
    // Barrier: a real message after them is answered.
    s.push_message(dm("again", "200.4"));
    until(&s, DM, |m| m.len() == 2).await;
    assert_eq!(user_turns(&app), ["hello", "again"]);
    let acked = s.wait(LIMIT, |f| f.acks().len() >= 47).await;
    assert!(acked, "{} acks", s.acks().len());
    assert!(s.acks().iter().any(|a| a.envelope_id == "unknown-1"));
    assert_acks_in_time(&s);
    drop(app);
}

#[actix_web::test]
async fn refused_native_streams_fall_back_to_post_and_update_for_the_process() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    s.refuse("chat.startStream", "not_allowed_token_type");
    let gap = Duration::from_millis(50);
    let app = gateway(
        vec![
            Reply::numbered_stream(50, gap, gap),
            Reply::numbered_stream(50, gap, gap),
        ],
        &s,
        true,
    )
    .await;
    let full = words(50);
    s.push_message(dm("one", "400.1"));
    let msgs = until(&s, DM, |m| texts(m).contains(&full.trim_end())).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(!msgs[0].streamed);
    assert!(msgs[0].writes.len() >= 2, "posted, then updated as it grew");
    s.push_message(dm("two", "400.2"));
    until(&s, DM, |m| m.len() == 2 && m[1].text == full.trim_end()).await;
    assert_eq!(
        s.calls_of("chat.startStream").len(),
        1,
        "not tried again until restart"
    );
    drop(app);
}

#[actix_web::test]
async fn refused_mid_stream_the_stream_stops_and_the_rest_continues() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    s.refuse_after("chat.appendStream", 1, "feature_not_enabled");
    let gap = Duration::from_millis(60);
    let app = gateway(vec![Reply::numbered_stream(80, gap, gap)], &s, true).await;
    s.push_message(dm("go", "500.1"));
    let full = words(80);
    let msgs = until(&s, DM, |m| {
        m.len() == 2 && m[1].text.trim_end().ends_with("w79")
    })
    .await;
    assert!(msgs[0].streamed && msgs[0].stopped, "{msgs:?}");
    assert!(!msgs[1].streamed);
    assert_eq!(msgs[1].thread_ts.as_deref(), Some("500.1"));
    let shown = format!("{}{}", msgs[0].text, msgs[1].text);
    assert_eq!(
        shown.trim_end(),
        full.trim_end(),
        "nothing twice, nothing lost"
    );
    drop(app);
}

#[actix_web::test]
async fn rate_limits_lose_and_duplicate_nothing() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    s.inject("chat.postMessage", Inject::RateLimit { retry_after: 1 });
    s.inject("chat.postMessage", Inject::RateLimit { retry_after: 1 });
    s.inject("chat.appendStream", Inject::RateLimit { retry_after: 2 });
    let gap = Duration::from_millis(50);
    let app = gateway(
        vec![
            answer("patience pays"),
            Reply::numbered_stream(60, gap, gap),
        ],
        &s,
        false,
    )
    .await;
    s.push_message(dm("first", "600.1"));
    let msgs = until(&s, DM, |m| m.len() == 1).await;
    assert_eq!(msgs[0].text, "patience pays");
    assert_eq!(
        s.calls_of("chat.postMessage").len(),
        3,
        "two 429s, one send"
    );
    drop(app);
    // Streamed: an append held by a rate limit.
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    s.inject("chat.appendStream", Inject::RateLimit { retry_after: 2 });
    let app = gateway(vec![Reply::numbered_stream(60, gap, gap)], &s, true).await;
    s.push_message(dm("second", "600.2"));
    let msgs = until(&s, DM, |m| m.iter().any(|x| x.stopped)).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].text.trim_end(), words(60).trim_end());
    drop(app);
}

#[actix_web::test]
async fn a_long_answer_is_split_within_39000_characters_in_mrkdwn() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let paragraph = "lorem ipsum dolor sit amet ".repeat(100);
    let long: String = (0..30).map(|i| format!("{i}: {paragraph}\n\n")).collect();
    let app = gateway(
        vec![
            answer(&long),
            answer("**bold** and [docs](https://example.com) for @channel <b>"),
        ],
        &s,
        false,
    )
    .await;
    s.push_message(dm("long please", "700.1"));
    let msgs = until(&s, DM, |m| m.iter().any(|x| x.text.contains("29: lorem"))).await;
    assert!(msgs.len() >= 3, "{} parts", msgs.len());
    assert!(msgs.iter().all(|m| m.text.chars().count() <= 39_000));
    api_support::assert_parts_make_the_answer(&texts(&msgs), &long);
    let n = msgs.len();
    s.push_message(dm("format", "700.2"));
    let msgs = until(&s, DM, |m| m.len() == n + 1).await;
    assert_eq!(
        msgs[n].text,
        "*bold* and <https://example.com|docs> for @channel &lt;b&gt;"
    );
    let post = s.calls_of("chat.postMessage");
    assert_eq!(post[n].body["parse"], "none", "no @channel ping");
    drop(app);
}

/// The ack payload text of the slash command `envelope`, once acked.
async fn slash_reply(s: &FakeSlack, envelope: &str) -> String {
    let seen = s
        .wait(LIMIT, |f| {
            f.acks().iter().any(|a| a.envelope_id == envelope)
        })
        .await;
    assert!(seen, "no ack for {envelope}");
    let ack = s
        .acks()
        .into_iter()
        .find(|a| a.envelope_id == envelope)
        .unwrap_or_else(|| panic!("no ack"));
    assert!(ack.after < ACK_DEADLINE, "acked after {:?}", ack.after);
    let p = ack.payload.unwrap_or_default();
    assert_eq!(p["response_type"], "ephemeral");
    p["text"].as_str().unwrap_or_default().to_string()
}

#[actix_web::test]
async fn slash_commands_are_answered_in_the_ack_and_act_on_the_whole_channel() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let slow = Duration::from_millis(200);
    let app = gateway(
        vec![
            Reply::numbered_stream(200, slow, slow),
            answer("fresh start"),
        ],
        &s,
        true,
    )
    .await;
    let e = s.push_slash_command(DM, USER, "help");
    assert!(slash_reply(&s, &e).await.contains("/new"));
    // A turn runs in a channel thread; /hermes stop in the channel stops it.
    s.push_message(in_channel(&format!("<@{BOT_USER}> count"), "800.1", None));
    until(&s, CHANNEL, |m| !m.is_empty()).await;
    let e = s.push_slash_command(CHANNEL, USER, "stop");
    assert_eq!(slash_reply(&s, &e).await, "⚡ Stopping.");
    let msgs = until(&s, CHANNEL, |m| {
        m.iter()
            .any(|x| x.stopped && x.text.ends_with("(interrupted)"))
    })
    .await;
    assert_eq!(msgs[0].thread_ts.as_deref(), Some("800.1"));
    // /hermes new resets the channel's threads: the thread starts afresh.
    let e = s.push_slash_command(CHANNEL, USER, "new");
    assert!(slash_reply(&s, &e).await.contains("New conversations"));
    s.push_message(in_channel("again", "800.2", Some("800.1")));
    until(&s, CHANNEL, |m| m.iter().any(|x| x.text == "fresh start")).await;
    let reqs = app.fake.requests();
    let history = reqs[1].body["messages"].as_array().map_or(0, Vec::len);
    let first = reqs[0].body["messages"].as_array().map_or(0, Vec::len);
    assert_eq!(history, first, "the thread's history was reset");
    drop(app);
}

#[actix_web::test]
async fn slacks_stop_button_interrupts_the_turn() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let slow = Duration::from_millis(200);
    let app = gateway(vec![Reply::numbered_stream(200, slow, slow)], &s, true).await;
    s.push_message(dm("count slowly", "900.1"));
    let streaming = s.wait(LIMIT, |f| !f.messages(DM).is_empty()).await;
    assert!(streaming);
    s.push_event(json!({"type": "agent_session_stopped", "channel": DM,
        "thread_ts": "900.1", "user": USER}));
    let msgs = until(&s, DM, |m| m.iter().any(|x| x.stopped)).await;
    assert!(msgs[0].text.ends_with("(interrupted)"), "{msgs:?}");
    assert!(!msgs[0].text.contains("  (interrupted)"), "{msgs:?}");
    drop(app);
}

#[actix_web::test]
async fn a_dropped_socket_or_a_disconnect_reconnects_and_loses_nothing() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let gap = Duration::from_millis(50);
    let app = gateway(
        vec![
            Reply::numbered_stream(60, gap, gap),
            answer("after"),
            answer("later"),
        ],
        &s,
        true,
    )
    .await;
    s.push_message(dm("stream", "1000.1"));
    let streaming = s.wait(LIMIT, |f| !f.messages(DM).is_empty()).await;
    assert!(streaming);
    s.drop_socket();
    let msgs = until(&s, DM, |m| m.iter().any(|x| x.stopped)).await;
    assert_eq!(msgs[0].text.trim_end(), words(60).trim_end());
    let back = s.wait(LIMIT, |f| f.connections() >= 2 && f.is_live()).await;
    assert!(back);
    s.push_message(dm("still there?", "1000.2"));
    until(&s, DM, |m| m.len() == 2).await;
    // Slack's warning: a fresh connection at once.
    s.send_disconnect("refresh_requested");
    let again = s.wait(LIMIT, |f| f.connections() >= 3 && f.is_live()).await;
    assert!(again);
    s.push_message(dm("and now?", "1000.3"));
    until(&s, DM, |m| m.len() == 3).await;
    assert_eq!(user_turns(&app), ["stream", "still there?", "and now?"]);
    drop(app);
}

#[actix_web::test]
async fn a_socket_without_pongs_is_replaced() {
    let s = FakeSlack::start(BOT_TOKEN, APP_TOKEN);
    let app = gateway(vec![answer("hi")], &s, false).await;
    s.set_pongs(false);
    let replaced = s.wait(LIMIT, |f| f.connections() >= 2).await;
    assert!(replaced, "a new connection after the pongs stopped");
    s.set_pongs(true);
    state_is(&app, "connected").await;
    s.push_message(dm("hello", "1100.1"));
    until(&s, DM, |m| m.len() == 1).await;
    drop(app);
}

async fn failed_because(app: &App) -> String {
    let h = state_is(app, "failed").await;
    h["error"].as_str().unwrap_or_default().to_string()
}

#[actix_web::test]
async fn a_bad_bot_token_or_app_token_fails_slack_only() {
    let s = FakeSlack::start("xoxb-the-right-one", APP_TOKEN);
    let app = start(FakeUpstream::start(vec![answer("ok")]), slack(&s, false)).await;
    let why = failed_because(&app).await;
    assert!(why.contains("SLACK_BOT_TOKEN"), "{why}");
    assert!(!why.contains(BOT_TOKEN), "no token in the reason");
    assert_eq!(s.calls_of("auth.test").len(), 1, "no retry loop");
    api_support::assert_api_still_answers(&app).await;
    drop(app);

    let s = FakeSlack::start(BOT_TOKEN, "xapp-the-right-one");
    let app = start(FakeUpstream::start(vec![answer("ok")]), slack(&s, false)).await;
    let why = failed_because(&app).await;
    assert!(why.contains("SLACK_APP_TOKEN"), "{why}");
    assert!(!why.contains(APP_TOKEN), "no token in the reason");
    assert_eq!(
        s.calls_of("apps.connections.open").len(),
        1,
        "no retry loop"
    );
    drop(app);
}
