//! Chat-platform scenarios, against the fake Telegram Bot API (in this
//! process) and the real gateway binary: how a long streamed answer is
//! edited, how fast a restart after `kill -9` finishes an answer it cut
//! off, and how fast a standby gateway takes the bot over from one killed
//! or stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use hermes::testing::fake_telegram::{FakeTelegram, Sent};
use hermes::testing::fake_upstream::{FakeUpstream, Reply, numbered_words};
use serde_json::Value;

use super::{Figures, Plan, procs};

const TOKEN: &str = "123456:bench-telegram-token";
const USER: i64 = 42;
/// The stream preview's edit interval (the default).
const EDIT_INTERVAL: f64 = 1.5;
/// Telegram's message limit, in UTF-16 units.
const MAX_UNITS: usize = 4096;
/// No wait here is longer than this beyond the answer itself.
const SLACK_TIME: Duration = Duration::from_secs(30);

fn env(tg: &FakeTelegram) -> Vec<(&'static str, String)> {
    vec![
        ("TELEGRAM_BOT_TOKEN", TOKEN.to_string()),
        ("TELEGRAM_API_BASE_URL", tg.url()),
        ("TELEGRAM_ALLOWED_USERS", USER.to_string()),
        ("HERMES_STREAMING_ENABLED", "true".to_string()),
        ("API_SERVER_ENABLED", "true".to_string()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The words of every message, in order (parts split at spaces).
fn words_of(m: &[Sent]) -> String {
    m.iter()
        .flat_map(|s| s.text.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A long answer at 50 deltas a second: edits per message within the
/// interval's bound, every part within the limit, the text exact.
pub async fn stream_preview(p: &Plan) -> Result<Figures, String> {
    let (n, gap) = if p.quick {
        (300, Duration::from_millis(20))
    } else {
        (3000, Duration::from_millis(20))
    };
    let tg = FakeTelegram::start(TOKEN);
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(n, gap, gap)]);
    let env = env(&tg);
    let gw = procs::start_gateway(Some(&fake.url()), &as_refs(&env)).await?;
    let expected = numbered_words(n).concat();
    let expected = expected.split_whitespace().collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    tg.push_dm(USER, "tell me everything");
    let limit = gap * n as u32 + SLACK_TIME;
    let msgs = tg
        .wait_for(USER, limit, |m| {
            words_of(m) == expected && m.iter().all(|s| !s.text.ends_with('▌'))
        })
        .await;
    let took = started.elapsed().as_secs_f64();
    drop(gw);
    if words_of(&msgs) != expected {
        return Err(format!(
            "the final text is not the answer ({} messages)",
            msgs.len()
        ));
    }
    let units = |t: &str| t.encode_utf16().count();
    if let Some(long) = msgs.iter().find(|m| units(&m.text) > MAX_UNITS) {
        return Err(format!("a part of {} units", units(&long.text)));
    }
    let edits = msgs
        .iter()
        .map(|m| m.writes.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let answer_secs = (gap * n as u32).as_secs_f64();
    let bound = (answer_secs / EDIT_INTERVAL).ceil() + 1.0;
    if edits as f64 > bound {
        return Err(format!("{edits} edits of one message; at most {bound}"));
    }
    Ok(Figures::from([
        ("answer_s", answer_secs),
        ("delivered_after_s", took),
        ("messages", msgs.len() as f64),
        ("max_edits_per_message", edits as f64),
        ("edit_bound", bound),
    ]))
}

/// `kill -9` while an answer types itself out, then a restart: the time
/// from the second start to the cut-off message finalised and the one
/// notice sent.
pub async fn delivery_recovery(_: &Plan) -> Result<Figures, String> {
    let tg = FakeTelegram::start(TOKEN);
    let slow = Duration::from_millis(50);
    let fake = FakeUpstream::start(vec![Reply::numbered_stream(400, slow, slow)]);
    let env = env(&tg);
    let gw = procs::start_gateway(Some(&fake.url()), &as_refs(&env)).await?;
    tg.push_dm(USER, "count to four hundred");
    let shown = tg
        .wait_for(USER, SLACK_TIME, |m| {
            m.first()
                .is_some_and(|s| s.writes.len() >= 2 && s.text.ends_with('▌'))
        })
        .await;
    if shown.is_empty() {
        return Err("no preview before the kill".into());
    }
    let dir = gw.kill()?;
    let cut = tg.messages(USER)[0]
        .text
        .trim_end_matches('▌')
        .trim_end()
        .to_string();
    let restarted = Instant::now();
    let gw = procs::start_gateway_in(dir, Some(&fake.url()), &as_refs(&env)).await?;
    let ready = restarted.elapsed().as_secs_f64();
    let done = tg
        .wait_for(USER, SLACK_TIME, |m| {
            m.len() >= 2 && m[0].text.ends_with("(interrupted by a restart)")
        })
        .await;
    let recovered = restarted.elapsed().as_secs_f64();
    drop(gw);
    if done.len() != 2 || done[0].text != format!("{cut} (interrupted by a restart)") {
        return Err(format!("not finished exactly once: {done:?}"));
    }
    if fake.requests().len() != 1 {
        return Err("the cut-off turn was run again".into());
    }
    Ok(Figures::from([
        ("restart_ready_s", ready),
        ("finished_after_restart_s", recovered),
    ]))
}

/// The gateways of `platform_takeover`, in the order they start.
const MEMBERS: [&str; 3] = ["bench-a", "bench-b", "bench-c"];
/// How long a gateway may take to show a platform state in `/health/detailed`.
const STATE_LIMIT: Duration = Duration::from_secs(30);
/// How long the scenario waits for an answer after a kill: the lease's 10 s
/// and the standby's 2 s retry, with room.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(45);

/// A model that answers each message with "<member> re <its text>", so the
/// answer in Telegram says which gateway ran the turn.
fn echo_upstream(member: &'static str) -> FakeUpstream {
    FakeUpstream::start_with(vec![], move |r| {
        let text = last_user_text(&r.body);
        Reply::completion(&format!("{member} re {text}"), "stop", (1, 1))
    })
}

/// The content of the last message of a chat request.
fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A gateway of the group: its own log and port, the group's home and bot,
/// answers in one message (no preview edits to wait for).
async fn start_member(
    tg: &FakeTelegram,
    upstream: &FakeUpstream,
    member: &str,
    home: &Path,
) -> Result<procs::Gateway, String> {
    let mut env = env(tg);
    for (k, v) in &mut env {
        if *k == "HERMES_STREAMING_ENABLED" {
            *v = "false".into();
        }
    }
    env.push(("HERMES_INSTANCE_ID", member.to_string()));
    env.push(("HERMES_HOME", home.display().to_string()));
    procs::start_gateway(Some(&upstream.url()), &as_refs(&env)).await
}

/// The log of a gateway whose directory is `dir`: its last lines.
fn log_tail(dir: &Path) -> String {
    let log = dir.join(format!("gateway-{}.log", std::process::id()));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The log of a running gateway (its home is overridden; the log stays in its directory).
fn live_log(gw: &procs::Gateway) -> String {
    gw.home().parent().map(log_tail).unwrap_or_default()
}

/// `/health/detailed` of a gateway (`Null` when it does not answer).
async fn detailed(gw: &procs::Gateway) -> Value {
    let sent = awc::Client::default()
        .get(format!("{}/health/detailed", gw.base))
        .bearer_auth(procs::KEY)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match sent {
        Ok(mut r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

/// Polls `/health/detailed` (bounded) until Telegram's entry is in `state`;
/// the last answer either way.
async fn telegram_until(gw: &procs::Gateway, state: &str) -> Value {
    let deadline = Instant::now() + STATE_LIMIT;
    loop {
        let h = detailed(gw).await;
        if h["platforms"]["telegram"]["state"] == state || Instant::now() >= deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until `gw` runs no turn: a kill or a stop between
/// messages, not during one.
async fn idle(gw: &procs::Gateway, member: &str) -> Result<(), String> {
    let deadline = Instant::now() + STATE_LIMIT;
    loop {
        let h = detailed(gw).await;
        if h["runs_in_flight"] == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{member} never idle: {h}\n{}", live_log(gw)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until a gateway sent SIGTERM shows it acted on it: its
/// `/health/detailed` says `draining`, or it no longer answers.
async fn draining(gw: &procs::Gateway, member: &str) -> Result<(), String> {
    let deadline = Instant::now() + STATE_LIMIT;
    loop {
        let h = detailed(gw).await;
        if h.is_null() || h["draining"] == true {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{member} never drained: {h}\n{}", live_log(gw)));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Fails unless `gw`'s `/health/detailed` names `member` as this instance,
/// in Telegram `state`, and the lease's holder as `holder`.
async fn check_health(
    gw: &procs::Gateway,
    member: &str,
    state: &str,
    holder: &str,
) -> Result<(), String> {
    let h = telegram_until(gw, state).await;
    let tg = &h["platforms"]["telegram"];
    if h["instance"] != member
        || h["storage"] != "sqlite"
        || tg["state"] != state
        || tg["lease"]["holder"] != holder
    {
        return Err(format!(
            "{member}: expected Telegram {state} with {holder} holding the lease; /health/detailed: {h}\n{}",
            live_log(gw)
        ));
    }
    Ok(())
}

/// The bot's answers to the message `text`.
fn answers_to(tg: &FakeTelegram, text: &str) -> Vec<Sent> {
    let tail = format!(" re {text}");
    tg.messages(USER)
        .into_iter()
        .filter(|m| m.text.ends_with(&tail))
        .collect()
}

/// Sends `text` (the clock already running from `since`), waits (bounded)
/// for its answer, and returns how long after `since` the answer was
/// created and which gateway sent it.
async fn answer_after(
    tg: &FakeTelegram,
    text: &str,
    since: Instant,
    limit: Duration,
) -> Result<(Duration, String), String> {
    tg.push_dm(USER, text);
    let tail = format!(" re {text}");
    let msgs = tg
        .wait_for(USER, limit, |m| m.iter().any(|s| s.text.ends_with(&tail)))
        .await;
    let answer = msgs
        .iter()
        .find(|s| s.text.ends_with(&tail))
        .ok_or_else(|| {
            let said: Vec<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
            format!("{text:?} not answered within {limit:?}; the bot said {said:?}")
        })?;
    let at = answer.writes.first().copied().unwrap_or_else(Instant::now);
    let member = answer.text.split_whitespace().next().unwrap_or_default();
    Ok((at.saturating_duration_since(since), member.to_string()))
}

/// Two gateways on one home (one SQLite store) and one bot: the holder of
/// the bot's consumer lease is killed with SIGKILL between messages, and the
/// time from the kill to the standby's answer to a message sent right after
/// it is measured (bounded by the lease's 10 s and the standby's 2 s retry).
/// Then a third gateway stands by, the second is stopped with SIGTERM (it
/// releases the lease), a message is sent as soon as it shows it is
/// draining, and the time from the signal to the third's answer is measured
/// (bounded by the 2 s retry). Fails unless every message is answered once,
/// by the holder, the fake Bot API saw no second poller while two gateways
/// ran, and the answering gateway's `/health/detailed` names itself the holder.
pub async fn platform_takeover(_: &Plan) -> Result<Figures, String> {
    let [a_id, b_id, c_id] = MEMBERS;
    let tg = FakeTelegram::start(TOKEN);
    let ups = MEMBERS.map(echo_upstream);
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let home = root.path().join("home");

    let a = start_member(&tg, &ups[0], a_id, &home).await?;
    check_health(&a, a_id, "connected", a_id).await?;
    let b = start_member(&tg, &ups[1], b_id, &home).await?;
    check_health(&b, b_id, "standby", a_id).await?;
    // The holder answers, so its offset is stored before it dies.
    let (_, by) = answer_after(&tg, "dm-first", Instant::now(), SLACK_TIME).await?;
    if by != a_id {
        return Err(format!("dm-first answered by {by}, not {a_id}"));
    }
    if tg.conflicts() != 0 {
        return Err(format!(
            "{} getUpdates conflicts with {a_id} and {b_id} running\n{a_id}:\n{}\n{b_id}:\n{}",
            tg.conflicts(),
            live_log(&a),
            live_log(&b)
        ));
    }

    // 1. The holder dies between messages.
    idle(&a, a_id).await?;
    let killed = Instant::now();
    let a_dir = a.kill()?;
    let (takeover, by) = answer_after(&tg, "dm-after-kill", killed, TAKEOVER_LIMIT)
        .await
        .map_err(|e| {
            format!(
                "{e}\n{a_id}:\n{}\n{b_id}:\n{}",
                log_tail(a_dir.path()),
                live_log(&b)
            )
        })?;
    if by != b_id {
        return Err(format!("dm-after-kill answered by {by}, not {b_id}"));
    }
    check_health(&b, b_id, "connected", b_id).await?;

    // 2. A rolling deploy: a new gateway stands by, the holder stops. The
    // conflicts are counted while the two run (the killed holder's poll, if
    // the fake still held it, would count once at the takeover).
    let conflicts = tg.conflicts();
    let c = start_member(&tg, &ups[2], c_id, &home).await?;
    check_health(&c, c_id, "standby", b_id).await?;
    if tg.conflicts() != conflicts {
        return Err(format!(
            "{} getUpdates conflicts with {b_id} and {c_id} running\n{b_id}:\n{}\n{c_id}:\n{}",
            tg.conflicts() - conflicts,
            live_log(&b),
            live_log(&c)
        ));
    }
    idle(&b, b_id).await?;
    let stopped = Instant::now();
    // SAFETY: signalling our own child; `stop` below reaps it (a second
    // SIGTERM during the drain is ignored).
    unsafe {
        libc::kill(b.pid as i32, libc::SIGTERM);
    }
    // A message that reaches the holder before it has seen the signal is
    // its own to answer (in its drain, before it lets the bot go): the
    // message goes once the holder shows it is stopping, milliseconds on.
    draining(&b, b_id).await?;
    let answered = answer_after(&tg, "dm-after-stop", stopped, SLACK_TIME).await;
    let b_log = b.home().parent().map(Path::to_path_buf);
    let b_dir = b.stop().map_err(|e| {
        format!(
            "{b_id}: {e}\n{}",
            b_log.as_deref().map(log_tail).unwrap_or_default()
        )
    })?;
    let (handover, by) = answered.map_err(|e| {
        format!(
            "{e}\n{b_id}:\n{}\n{c_id}:\n{}",
            log_tail(b_dir.path()),
            live_log(&c)
        )
    })?;
    if by != c_id {
        return Err(format!(
            "dm-after-stop answered by {by}, not {c_id}\n{b_id}:\n{}",
            log_tail(b_dir.path())
        ));
    }
    check_health(&c, c_id, "connected", c_id).await?;

    // Nothing handled twice: a late second answer would show by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for dm in ["dm-first", "dm-after-kill", "dm-after-stop"] {
        let answers = answers_to(&tg, dm);
        let asked = ups
            .iter()
            .flat_map(|u| u.requests())
            .filter(|r| last_user_text(&r.body) == dm)
            .count();
        if answers.len() != 1 || asked != 1 {
            let texts: Vec<&str> = answers.iter().map(|m| m.text.as_str()).collect();
            return Err(format!(
                "{dm}: {} answers {texts:?}, the model asked {asked} times",
                answers.len()
            ));
        }
    }
    drop(c);
    Ok(Figures::from([
        ("takeover_after_kill_ms", takeover.as_secs_f64() * 1000.0),
        ("handover_after_stop_ms", handover.as_secs_f64() * 1000.0),
    ]))
}
