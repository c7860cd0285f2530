//! Chat commands: parsing, and the texts they answer with. Commands are the
//! same on every platform; a platform that addresses commands to a bot by
//! name (`/new@my_bot`) gets the name ignored.

use crate::sessions::SessionInfo;

/// A command a chat user can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/new`, `/reset`: start a new conversation.
    New,
    /// `/stop`: interrupt the running answer.
    Stop,
    /// `/status`: the conversation's age, size, usage and model.
    Status,
    /// `/help`.
    Help,
    /// `/model`: the model in use.
    Model,
    /// `/title [text]`: show or set the conversation's title.
    Title(String),
    /// `/approve`: run the dangerous command waiting for an answer.
    Approve,
    /// `/deny`: refuse it.
    Deny,
}

/// `/help`.
pub const HELP: &str = "Commands:\n\
/new or /reset: start a new conversation\n\
/stop: interrupt the running answer\n\
/status: this conversation's age, size, token usage and model\n\
/model: the model in use\n\
/title <text>: name this conversation\n\
/approve, /deny: answer a pending request to run a dangerous command\n\
/help: this list\n\
Anything else goes to the agent.";

/// The command `text` is, if it is one (unknown `/words` are not: they go to
/// the agent like any message).
pub fn parse(text: &str) -> Option<Command> {
    let text = text.trim();
    let first = text.split_whitespace().next()?;
    if !first.starts_with('/') {
        return None;
    }
    // `/new@my_bot`: the part after `@` names the bot.
    let word = first
        .split('@')
        .next()
        .unwrap_or(first)
        .to_ascii_lowercase();
    let arg = text[first.len()..].trim().to_string();
    Some(match word.as_str() {
        "/new" | "/reset" => Command::New,
        "/stop" => Command::Stop,
        "/status" => Command::Status,
        "/help" => Command::Help,
        "/model" => Command::Model,
        "/title" => Command::Title(arg),
        "/approve" => Command::Approve,
        "/deny" => Command::Deny,
        _ => return None,
    })
}

/// `/status` text.
pub fn status_text(key: &str, info: &SessionInfo, model: &str, running: bool, now: u64) -> String {
    let age = if info.created_at == 0 {
        "new".to_string()
    } else {
        format!(
            "started {} ago",
            human_duration(now.saturating_sub(info.created_at))
        )
    };
    let mut s = format!(
        "Session: {key}\nAge: {age}\nMessages: {}\nTurns: {}\nTokens: {} prompt, {} completion ({} total)\nModel: {model}\nTurn running: {}",
        info.messages,
        info.turns,
        info.prompt_tokens,
        info.completion_tokens,
        info.prompt_tokens + info.completion_tokens,
        if running { "yes" } else { "no" },
    );
    if let Some(t) = &info.title {
        s.push_str(&format!("\nTitle: {t}"));
    }
    s
}

/// "3 hours", "25 minutes", "2 days".
pub fn human_duration(secs: u64) -> String {
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 2 * 3600 {
        (secs / 3600, "hour")
    } else if secs >= 120 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_or_without_the_bots_name() {
        assert_eq!(parse("/new"), Some(Command::New));
        assert_eq!(parse("  /RESET@hermes_bot  "), Some(Command::New));
        assert_eq!(
            parse("/title Trip planning"),
            Some(Command::Title("Trip planning".into()))
        );
        assert_eq!(parse("/title"), Some(Command::Title(String::new())));
        assert_eq!(parse("/approve@x"), Some(Command::Approve));
        assert_eq!(
            parse("/frobnicate"),
            None,
            "unknown commands go to the agent"
        );
        assert_eq!(parse("hello /new"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(86_400), "24 hours");
        assert_eq!(human_duration(5 * 86_400), "5 days");
    }

    #[test]
    fn status_names_everything() {
        let info = SessionInfo {
            created_at: 1_000,
            updated_at: 2_000,
            title: Some("T".into()),
            prompt_tokens: 3,
            completion_tokens: 4,
            turns: 2,
            messages: 5,
        };
        let s = status_text("k", &info, "m", true, 1_000 + 7200);
        for want in [
            "Session: k",
            "started 2 hours ago",
            "Messages: 5",
            "7 total",
            "Model: m",
            "running: yes",
            "Title: T",
        ] {
            assert!(s.contains(want), "{want} in {s}");
        }
    }
}
