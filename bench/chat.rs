//! Chat-platform scenarios, against the fake Telegram Bot API (in this
//! process) and the real gateway binary: how a long streamed answer is
//! edited, and how fast a restart after `kill -9` finishes an answer it cut
//! off.

use std::time::{Duration, Instant};

use hermes::testing::fake_telegram::{FakeTelegram, Sent};
use hermes::testing::fake_upstream::{FakeUpstream, Reply, numbered_words};

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
