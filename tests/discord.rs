//! Discord end to end: the real gateway (in-process, port 0) against the
//! fake Discord (REST and Gateway websocket) and the fake model server, all
//! on loopback. Times are read on the fake platform's side.

mod api_support;

use std::time::Duration;

use api_support::{App, start, start_in, user_turns};
use hermes::config::Config;
use hermes::platforms::discord::INTENTS;
use hermes::testing::fake_discord::{BOT_ID, FakeDiscord, Inject, Sent};
use hermes::testing::fake_upstream::{FakeUpstream, Reply, numbered_words};
use serde_json::{Value, json};

const TOKEN: &str = "MTIzNDU2Nzg5.fake.discord-bot-token-abcdefghijkl";
const USER: &str = "42";
/// A DM channel, a server with a channel, and a thread in it.
const DM: &str = "500";
const GUILD: &str = "700";
const CHANNEL: &str = "701";
const THREAD: &str = "702";
/// No wait in these tests is longer than this.
const LIMIT: Duration = Duration::from_secs(30);
const POST: &str = "POST /channels/{id}/messages";

fn discord(dc: &FakeDiscord, streaming: bool) -> impl FnOnce(&mut Config) {
    let url = dc.api_url();
    move |c: &mut Config| {
        c.discord.bot_token = Some(TOKEN.into());
        c.discord.api_base_url = Some(url);
        c.discord.allowed_users = vec![USER.to_string()];
        c.api_server.enabled = true;
        c.streaming.enabled = streaming;
    }
}

async fn gateway(script: Vec<Reply>, dc: &FakeDiscord, streaming: bool) -> App {
    let app = start(FakeUpstream::start(script), discord(dc, streaming)).await;
    connected(&app).await;
    app
}

fn answer(text: &str) -> Reply {
    Reply::completion(text, "stop", (1, 1))
}

/// `w0 w1 … w{n-1}` as Discord shows it (no trailing space).
fn words(n: usize) -> String {
    numbered_words(n).concat().trim_end().to_string()
}

async fn state_is(app: &App, state: &str) -> Value {
    api_support::platform_state_is(app, "discord", state).await
}

async fn connected(app: &App) {
    state_is(app, "connected").await;
}

/// Waits until the bot's messages in `channel` satisfy `cond`.
async fn until(dc: &FakeDiscord, channel: &str, cond: impl Fn(&[Sent]) -> bool) -> Vec<Sent> {
    let seen = dc.wait(LIMIT, |d| cond(&d.messages(channel))).await;
    let msgs = dc.messages(channel);
    assert!(seen, "not seen within {LIMIT:?}: {msgs:?}");
    msgs
}

fn texts(m: &[Sent]) -> Vec<&str> {
    m.iter().map(|s| s.content.as_str()).collect()
}

#[actix_web::test]
async fn a_direct_message_is_answered_with_a_reply_that_pings_nobody() {
    let dc = FakeDiscord::start(TOKEN);
    let app = gateway(
        vec![answer("hello @everyone"), answer("second")],
        &dc,
        false,
    )
    .await;
    let log = dc.gateway_log();
    assert_eq!(log.identifies.len(), 1);
    assert_eq!(log.identifies[0]["intents"], INTENTS);
    assert!(
        log.connects[0].ends_with("?v=10&encoding=json"),
        "{:?}",
        log.connects
    );
    let asked = dc.push_message(DM, None, USER, "hi");
    let msgs = until(&dc, DM, |m| !m.is_empty()).await;
    let m = &msgs[0];
    assert_eq!(m.content, "hello @everyone");
    assert_eq!(m.reply_to.as_deref(), Some(asked.as_str()));
    assert_eq!(m.allowed_mentions, json!({"parse": []}));
    assert!(m.nonce.as_deref().is_some_and(|n| !n.is_empty()));
    let post = &dc.calls_of(POST)[0];
    assert_eq!(post.body["enforce_nonce"], true);
    // The bot's own message came back through the Gateway: not answered.
    // Barrier: the next message is answered, and the model saw two turns.
    dc.push_message(DM, None, USER, "again");
    until(&dc, DM, |m| m.len() == 2).await;
    assert_eq!(user_turns(&app), ["hi", "again"]);
    assert!(!dc.typing().is_empty(), "typing shown while the turn ran");
    drop(app);
}

#[actix_web::test]
async fn a_streamed_answer_types_itself_out_in_one_message() {
    let dc = FakeDiscord::start(TOKEN);
    let gap = Duration::from_millis(60);
    let app = gateway(vec![Reply::numbered_stream(60, gap, gap)], &dc, true).await;
    dc.push_message(DM, None, USER, "tell me a story");
    let full = words(60);
    let msgs = until(&dc, DM, |m| texts(m).contains(&full.as_str())).await;
    assert_eq!(msgs.len(), 1, "one message, edited: {msgs:?}");
    assert!(msgs[0].writes.len() >= 2, "edited as it grew");
    let edits = dc.calls_of("PATCH /channels/{id}/messages/{mid}");
    assert!(
        edits
            .iter()
            .all(|c| c.body["allowed_mentions"] == json!({"parse": []}))
    );
    drop(app);
}

#[actix_web::test]
async fn a_long_answer_is_split_within_2000_characters() {
    let dc = FakeDiscord::start(TOKEN);
    let paragraph = "lorem ipsum dolor sit amet ".repeat(20);
    let long: String = (0..12).map(|i| format!("{i}: {paragraph}\n\n")).collect();
    let app = gateway(vec![answer(&long)], &dc, false).await;
    dc.push_message(DM, None, USER, "long please");
    let msgs = until(&dc, DM, |m| {
        m.iter().any(|s| s.content.contains("11: lorem"))
    })
    .await;
    assert!(msgs.len() >= 3, "{} parts", msgs.len());
    assert!(msgs.iter().all(|m| m.content.chars().count() <= 2000));
    api_support::assert_parts_make_the_answer(&texts(&msgs), &long);
    drop(app);
}

#[actix_web::test]
async fn in_server_channels_only_mentions_and_replies_to_the_bot_are_answered() {
    let dc = FakeDiscord::start(TOKEN);
    let app = gateway(
        vec![answer("one"), answer("two"), answer("three")],
        &dc,
        false,
    )
    .await;
    dc.push_message(CHANNEL, Some(GUILD), USER, "talking among ourselves");
    dc.push_message_with(
        CHANNEL,
        Some(GUILD),
        "77",
        &format!("<@{BOT_ID}> I am a bot"),
        json!({"author": {"id": "77", "bot": true}}),
    );
    dc.push_message(
        CHANNEL,
        Some(GUILD),
        USER,
        &format!("<@{BOT_ID}> what time is it"),
    );
    let first = until(&dc, CHANNEL, |m| m.len() == 1).await;
    dc.push_message(CHANNEL, Some(GUILD), USER, &format!("and <@!{BOT_ID}> now"));
    until(&dc, CHANNEL, |m| m.len() == 2).await;
    dc.push_message_with(
        CHANNEL,
        Some(GUILD),
        USER,
        "thanks",
        json!({"referenced_message": {"id": first[0].id, "author": {"id": BOT_ID, "bot": true}}}),
    );
    until(&dc, CHANNEL, |m| m.len() == 3).await;
    // Only the three addressed messages reached the model, mentions removed.
    assert_eq!(user_turns(&app), ["what time is it", "and now", "thanks"]);
    drop(app);
}

#[actix_web::test]
async fn a_thread_is_its_own_session_answered_in_the_thread() {
    let dc = FakeDiscord::start(TOKEN);
    let app = gateway(
        vec![
            answer("in channel"),
            answer("in thread"),
            answer("in the old thread"),
        ],
        &dc,
        false,
    )
    .await;
    dc.create_thread(GUILD, CHANNEL, THREAD, true);
    dc.push_message(
        CHANNEL,
        Some(GUILD),
        USER,
        &format!("<@{BOT_ID}> remember 7"),
    );
    until(&dc, CHANNEL, |m| m.len() == 1).await;
    dc.push_message(
        THREAD,
        Some(GUILD),
        USER,
        &format!("<@{BOT_ID}> what number?"),
    );
    let in_thread = until(&dc, THREAD, |m| m.len() == 1).await;
    assert_eq!(in_thread[0].content, "in thread");
    assert_eq!(dc.messages(CHANNEL).len(), 1, "nothing more in the channel");
    // The thread's conversation does not hold the channel's.
    let last = app.fake.requests().last().cloned();
    let history = last
        .map(|r| r.body["messages"].to_string())
        .unwrap_or_default();
    assert!(!history.contains("remember 7"), "{history}");
    // A thread the Gateway never described (made before the start): the
    // gateway asks what it is, and answers in it.
    dc.create_thread(GUILD, CHANNEL, "703", false);
    dc.push_message("703", Some(GUILD), USER, &format!("<@{BOT_ID}> and here?"));
    let old = until(&dc, "703", |m| m.len() == 1).await;
    assert_eq!(old[0].content, "in the old thread");
    assert_eq!(dc.messages(CHANNEL).len(), 1, "nothing more in the channel");
    assert_eq!(
        dc.calls_of("GET /channels/{id}").len(),
        2,
        "the channel and the old thread"
    );
    drop(app);
}

#[actix_web::test]
async fn a_dropped_socket_mid_answer_resumes_and_loses_and_duplicates_nothing() {
    let dc = FakeDiscord::start(TOKEN);
    dc.replay_extra_on_resume(3);
    let gap = Duration::from_millis(50);
    // The second message waits for the first answer (not interrupting it).
    let queue = |c: &mut Config| {
        discord(&dc, true)(c);
        c.gateway.busy_policy = hermes::config::BusyPolicy::Queue;
    };
    let app = start(
        FakeUpstream::start(vec![
            Reply::numbered_stream(40, gap, gap),
            answer("second answer"),
        ]),
        queue,
    )
    .await;
    connected(&app).await;
    dc.push_message(DM, None, USER, "first");
    until(&dc, DM, |m| !m.is_empty()).await;
    dc.drop_socket();
    // Sent while the socket is down: Discord keeps it for the resume.
    dc.push_message(DM, None, USER, "second");
    let full = words(40);
    let msgs = until(&dc, DM, |m| {
        texts(m).contains(&full.as_str()) && texts(m).contains(&"second answer")
    })
    .await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(user_turns(&app), ["first", "second"], "each handled once");
    let log = dc.gateway_log();
    assert_eq!(log.identifies.len(), 1, "resumed, not identified afresh");
    assert_eq!(log.resumes.len(), 1);
    assert_eq!(log.resumes[0]["session_id"], "session-1");
    assert!(log.connects[1].starts_with("/resume"), "{:?}", log.connects);
    connected(&app).await;
    drop(app);
}

#[actix_web::test]
async fn reconnect_requests_and_missed_heartbeat_acks_resume_the_session() {
    let dc = FakeDiscord::start(TOKEN);
    dc.set_heartbeat_interval(200);
    let app = gateway(vec![answer("a"), answer("b"), answer("c")], &dc, false).await;
    assert!(dc.wait(LIMIT, |d| d.gateway_log().heartbeats >= 2).await);
    let h = api_support::platform_health(&app, "discord").await;
    assert!(h["details"]["heartbeat_latency_ms"].is_u64(), "{h}");
    assert!(h["details"]["last_sequence"].is_u64(), "{h}");
    dc.ask_reconnect();
    assert!(dc.wait(LIMIT, |d| d.gateway_log().resumes.len() == 1).await);
    connected(&app).await;
    dc.push_message(DM, None, USER, "after op 7");
    until(&dc, DM, |m| m.len() == 1).await;
    dc.set_ack(false);
    assert!(dc.wait(LIMIT, |d| d.gateway_log().resumes.len() == 2).await);
    dc.set_ack(true);
    connected(&app).await;
    dc.push_message(DM, None, USER, "after a zombie");
    until(&dc, DM, |m| m.len() == 2).await;
    assert_eq!(dc.gateway_log().identifies.len(), 1);
    let metrics = app
        .get("/metrics")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .body()
        .await
        .unwrap_or_default();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("hermes_platform_up{platform=\"discord\"} 1"));
    assert!(metrics.contains("hermes_platform_last_sequence{platform=\"discord\"}"));
    drop(app);
}

#[actix_web::test]
async fn an_invalid_session_identifies_afresh_and_commands_are_registered_once() {
    let dc = FakeDiscord::start(TOKEN);
    let app = gateway(vec![answer("after op 9")], &dc, false).await;
    assert!(dc.wait(LIMIT, |d| d.commands().1 == 1).await);
    let (registered, _) = dc.commands();
    let names: Vec<&str> = registered
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "new", "reset", "stop", "status", "help", "model", "title", "approve", "deny"
        ]
    );
    dc.invalidate_session(false);
    assert!(
        dc.wait(LIMIT, |d| d.gateway_log().identifies.len() == 2)
            .await
    );
    connected(&app).await;
    dc.push_message(DM, None, USER, "still there?");
    until(&dc, DM, |m| m.len() == 1).await;
    // A fresh IDENTIFY does not register again (checked once per process).
    assert_eq!(dc.calls_of("GET /applications/{app}/commands").len(), 1);
    assert_eq!(dc.commands().1, 1);
    drop(app);
}

#[actix_web::test]
async fn slash_commands_are_answered_through_the_interaction_callback() {
    let dc = FakeDiscord::start(TOKEN);
    let app = gateway(vec![answer("hi there")], &dc, false).await;
    dc.push_command(DM, None, USER, "title", Some("Trip plans"));
    assert!(dc.wait(LIMIT, |d| d.replies().len() == 1).await);
    let r = &dc.replies()[0];
    assert!(!r.followup);
    assert!(r.after < Duration::from_secs(3));
    assert_eq!(r.body["type"], 4);
    assert_eq!(r.body["data"]["flags"], 64, "ephemeral");
    assert!(
        r.body["data"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Trip plans")),
        "{}",
        r.body
    );
    dc.push_command(DM, None, USER, "help", None);
    assert!(dc.wait(LIMIT, |d| d.replies().len() == 2).await);
    // Typed as text, the same command works too; and the agent still answers.
    dc.push_message(DM, None, USER, "/status");
    let msgs = until(&dc, DM, |m| m.len() == 1).await;
    assert!(
        msgs[0].content.contains("Trip plans"),
        "{}",
        msgs[0].content
    );
    dc.push_message(DM, None, USER, "hello");
    until(&dc, DM, |m| m.len() == 2).await;
    assert_eq!(user_turns(&app), ["hello"]);
    drop(app);
}

#[actix_web::test]
async fn a_restart_resumes_the_stored_session_and_keeps_the_commands() {
    let dc = FakeDiscord::start(TOKEN);
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let app = start_in(
        FakeUpstream::start(vec![answer("before")]),
        home.path(),
        None,
        discord(&dc, false),
    )
    .await;
    connected(&app).await;
    dc.push_message(DM, None, USER, "one");
    until(&dc, DM, |m| m.len() == 1).await;
    assert!(dc.wait(LIMIT, |d| d.commands().1 == 1).await);
    app.stop().await;
    drop(app);
    // Sent while the gateway restarts.
    dc.push_message(DM, None, USER, "two");
    let app = start_in(
        FakeUpstream::start(vec![answer("after"), answer("in the server")]),
        home.path(),
        None,
        discord(&dc, false),
    )
    .await;
    let msgs = until(&dc, DM, |m| m.len() == 2).await;
    assert_eq!(msgs[1].content, "after");
    let log = dc.gateway_log();
    assert_eq!(log.identifies.len(), 1, "the restart resumed");
    assert_eq!(log.resumes.len(), 1);
    assert_eq!(log.resumes[0]["session_id"], "session-1");
    assert_eq!(user_turns(&app), ["two"], "the earlier message not again");
    // Who the bot is came from the stored session: mentions are recognised.
    dc.push_message(CHANNEL, Some(GUILD), USER, &format!("<@{BOT_ID}> hello"));
    until(&dc, CHANNEL, |m| m.len() == 1).await;
    // The commands were already registered: read, not replaced.
    assert!(
        dc.wait(LIMIT, |d| d
            .calls_of("GET /applications/{app}/commands")
            .len()
            == 2)
            .await
    );
    assert_eq!(dc.commands().1, 1);
    drop(app);
}

#[actix_web::test]
async fn rate_limits_are_honoured_and_nothing_is_sent_into_an_exhausted_bucket() {
    let dc = FakeDiscord::start(TOKEN);
    // Stricter than the courier's own pace of a send a second per chat:
    // only the buckets keep the parts out of an exhausted one.
    dc.set_bucket(2, Duration::from_secs(3));
    let paragraph = "lorem ipsum dolor sit amet ".repeat(20);
    let long: String = (0..14).map(|i| format!("{i}: {paragraph}\n\n")).collect();
    let app = gateway(vec![answer(&long), answer("after 429")], &dc, false).await;
    dc.push_message(DM, None, USER, "long please");
    let msgs = until(&dc, DM, |m| {
        m.iter().any(|s| s.content.contains("13: lorem"))
    })
    .await;
    assert!(msgs.len() >= 4, "{} parts", msgs.len());
    assert_eq!(dc.violations(), Vec::<String>::new());
    // A 429 from the route: its retry_after is waited, the answer arrives once.
    dc.set_bucket(50, Duration::from_secs(1));
    dc.inject(
        POST,
        Inject::RateLimit {
            retry_after: 1.0,
            global: false,
        },
    );
    let before = msgs.len();
    dc.push_message(DM, None, USER, "again");
    until(&dc, DM, |m| m.len() == before + 1).await;
    let posts = dc.calls_of(POST);
    let (limited, retried) = (&posts[posts.len() - 2], &posts[posts.len() - 1]);
    assert!(retried.at.duration_since(limited.at) >= Duration::from_secs(1));
    drop(app);
}

#[actix_web::test]
async fn a_global_429_holds_every_route() {
    let dc = FakeDiscord::start(TOKEN);
    dc.inject(
        POST,
        Inject::RateLimit {
            retry_after: 1.5,
            global: true,
        },
    );
    let gap = Duration::from_millis(100);
    let app = gateway(vec![Reply::numbered_stream(20, gap, gap)], &dc, true).await;
    dc.push_message(DM, None, USER, "go");
    let full = words(20);
    until(&dc, DM, |m| texts(m).contains(&full.as_str())).await;
    let calls = dc.calls();
    let limited = calls
        .iter()
        .position(|c| c.method == "POST" && c.path.ends_with("/messages"))
        .unwrap_or_else(|| panic!("no POST"));
    let at = calls[limited].at;
    let next = &calls[limited + 1];
    assert!(
        next.at.duration_since(at) >= Duration::from_millis(1500),
        "{} {} went {:?} after a global 429",
        next.method,
        next.path,
        next.at.duration_since(at)
    );
    assert_eq!(dc.messages(DM).len(), 1);
    drop(app);
}

#[actix_web::test]
async fn a_send_whose_answer_is_lost_is_retried_without_posting_twice() {
    let dc = FakeDiscord::start(TOKEN);
    dc.set_echo(false);
    dc.inject(POST, Inject::LoseAnswer);
    let app = gateway(vec![answer("exactly once")], &dc, false).await;
    dc.push_message(DM, None, USER, "hi");
    until(&dc, DM, |m| !m.is_empty()).await;
    assert!(dc.wait(LIMIT, |d| d.calls_of(POST).len() == 2).await);
    let posts = dc.calls_of(POST);
    assert_eq!(posts[0].body["nonce"], posts[1].body["nonce"]);
    assert_eq!(texts(&dc.messages(DM)), ["exactly once"]);
    drop(app);
}

#[actix_web::test]
async fn a_lost_answer_whose_message_came_back_on_the_gateway_is_not_sent_again() {
    let dc = FakeDiscord::start(TOKEN);
    // Past Discord's nonce window: only the gateway's own MESSAGE_CREATE
    // (carrying the nonce) tells the send happened.
    dc.forget_nonces();
    dc.inject(POST, Inject::LoseAnswer);
    let app = gateway(vec![answer("exactly once"), answer("next")], &dc, false).await;
    dc.push_message(DM, None, USER, "hi");
    until(&dc, DM, |m| !m.is_empty()).await;
    // Barrier: the next answer arrives after the first send was settled.
    dc.push_message(DM, None, USER, "again");
    until(&dc, DM, |m| m.len() >= 2).await;
    assert_eq!(texts(&dc.messages(DM)), ["exactly once", "next"]);
    assert_eq!(
        dc.calls_of(POST).len(),
        2,
        "the lost send was not posted again"
    );
    drop(app);
}

#[actix_web::test]
async fn fragmented_and_large_gateway_messages_are_read_whole() {
    let dc = FakeDiscord::start(TOKEN);
    dc.fragment_frames(700);
    dc.pad_ready(300 * 1024);
    let app = gateway(vec![answer("pieced together")], &dc, false).await;
    dc.push_message(DM, None, USER, "hi");
    let msgs = until(&dc, DM, |m| !m.is_empty()).await;
    assert_eq!(msgs[0].content, "pieced together");
    drop(app);
}

/// Waits until Discord has failed; answers the reason health gives.
async fn failed_because(app: &App) -> String {
    let h = state_is(app, "failed").await;
    h["error"].as_str().unwrap_or_default().to_string()
}

#[actix_web::test]
async fn a_refused_privileged_intent_fails_discord_with_what_to_do() {
    let dc = FakeDiscord::start(TOKEN);
    dc.deny_privileged_intents();
    let app = start(
        FakeUpstream::start(vec![answer("api works")]),
        discord(&dc, false),
    )
    .await;
    let why = failed_because(&app).await;
    assert!(why.contains("Message Content"), "{why}");
    assert_eq!(dc.gateway_log().connects.len(), 1, "no reconnect loop");
    api_support::assert_api_still_answers(&app).await;
    assert_eq!(dc.gateway_log().connects.len(), 1, "no reconnect loop");
    drop(app);
}

#[actix_web::test]
async fn a_bad_token_fails_discord_only() {
    let dc = FakeDiscord::start("another-token");
    let app = start(
        FakeUpstream::start(vec![answer("api works")]),
        discord(&dc, false),
    )
    .await;
    let why = failed_because(&app).await;
    assert!(
        why.contains("DISCORD_BOT_TOKEN") && !why.contains(TOKEN),
        "{why}"
    );
    api_support::assert_api_still_answers(&app).await;
    assert!(dc.gateway_log().connects.is_empty());
    drop(app);

    // Straight to the Gateway (DISCORD_GATEWAY_URL): the IDENTIFY is refused, 4004.
    let url = dc.gateway_url();
    let app = start(FakeUpstream::start(vec![]), move |c: &mut Config| {
        discord(&dc, false)(c);
        c.discord.gateway_url = Some(url);
    })
    .await;
    let why = failed_because(&app).await;
    assert!(
        why.contains("4004") && why.contains("DISCORD_BOT_TOKEN"),
        "{why}"
    );
    drop(app);
}

#[actix_web::test]
async fn a_stranger_is_told_which_variable_lets_them_in_but_not_in_a_server() {
    let dc = FakeDiscord::start(TOKEN);
    let app = gateway(vec![answer("for the allowed user")], &dc, false).await;
    dc.push_message(CHANNEL, Some(GUILD), "66", &format!("<@{BOT_ID}> hello?"));
    dc.push_message(DM, None, "66", "hello?");
    dc.push_message(DM, None, "66", "hello again?");
    let msgs = until(&dc, DM, |m| !m.is_empty()).await;
    assert!(
        msgs[0].content.contains("DISCORD_ALLOWED_USERS") && msgs[0].content.contains("66"),
        "{}",
        msgs[0].content
    );
    // Barrier: the allowed user's answer comes after the stranger's messages.
    dc.push_message(DM, None, USER, "hi");
    let msgs = until(&dc, DM, |m| m.len() == 2).await;
    assert_eq!(
        msgs[1].content, "for the allowed user",
        "one private reply only"
    );
    assert!(
        dc.messages(CHANNEL).is_empty(),
        "strangers in servers are ignored"
    );
    assert_eq!(user_turns(&app), ["hi"]);
    drop(app);
}
