//! Requests about work another gateway instance runs (`scale-out.md`):
//! stopping, steering or answering the approval of a run, and cancelling a
//! response, act on the live task of the instance running it. A request
//! that reaches another instance is passed on through the store
//! ([`crate::store::commands`]), and each instance serves the commands
//! addressed to it ([`serve`]).

use serde_json::{Value, json};

use super::error::ApiError;
use super::state::AppState;

/// What is asked of the instance running a run or response.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Stop the run (it ends `cancelled`).
    StopRun,
    /// Add a user message before the run's next model call.
    SteerRun(String),
    /// Answer the approval the run waits for.
    Decide { approval_id: String, approve: bool },
    /// Cancel the running response.
    CancelResponse,
}

/// What the instance running it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// It is not running there (it ended meanwhile).
    NotRunning,
    /// The run waits for no such approval.
    NotPending,
}

impl Op {
    fn to_json(&self) -> Value {
        match self {
            Op::StopRun => json!({"op": "stop_run"}),
            Op::SteerRun(text) => json!({"op": "steer_run", "input": text}),
            Op::Decide {
                approval_id,
                approve,
            } => json!({"op": "decide", "approval_id": approval_id, "approve": approve}),
            Op::CancelResponse => json!({"op": "cancel_response"}),
        }
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(match v["op"].as_str()? {
            "stop_run" => Op::StopRun,
            "steer_run" => Op::SteerRun(v["input"].as_str()?.to_string()),
            "decide" => Op::Decide {
                approval_id: v["approval_id"].as_str()?.to_string(),
                approve: v["approve"].as_bool()?,
            },
            "cancel_response" => Op::CancelResponse,
            _ => return None,
        })
    }
}

impl Outcome {
    fn to_json(self) -> Value {
        let s = match self {
            Outcome::Done => "done",
            Outcome::NotRunning => "not_running",
            Outcome::NotPending => "not_pending",
        };
        json!({"outcome": s})
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(match v["outcome"].as_str()? {
            "done" => Outcome::Done,
            "not_running" => Outcome::NotRunning,
            "not_pending" => Outcome::NotPending,
            _ => return None,
        })
    }
}

/// The instance running work recorded as run by `instance`, when that is
/// another one.
pub fn elsewhere<'a>(state: &AppState, instance: Option<&'a str>) -> Option<&'a str> {
    instance.filter(|i| *i != state.leases.instance())
}

/// Passes `op` about `target` to `instance`, the one running it; 503 when
/// it does not answer in time (it may have died: its work is then ended as
/// interrupted within about 15 s).
pub async fn pass_on(
    state: &AppState,
    instance: &str,
    target: &str,
    op: Op,
) -> Result<Outcome, ApiError> {
    let answer = state
        .store
        .ask(instance, target, &op.to_json())
        .await
        .map_err(|e| super::run::storage_error(&e))?;
    answer.as_ref().and_then(Outcome::from_json).ok_or_else(|| {
        ApiError::instance_unavailable(format!(
            "{target} runs on gateway {instance}, which did not answer; try again"
        ))
    })
}

/// Does `op` to `target`, this instance's own live work (a request that
/// reached it, or a command passed on by another instance).
pub async fn here(state: &AppState, target: &str, op: Op) -> Outcome {
    match op {
        Op::StopRun => super::runs::stop_here(state, target),
        Op::SteerRun(text) => super::runs::steer_here(state, target, text),
        Op::Decide {
            approval_id,
            approve,
        } => super::runs::decide_here(state, target, &approval_id, approve).await,
        Op::CancelResponse => super::responses::cancel_here(state, target),
    }
}

/// What this instance does with a command: acts on its own live work.
async fn execute(state: &AppState, target: &str, body: &Value) -> Outcome {
    match Op::from_json(body) {
        Some(op) => here(state, target, op).await,
        None => {
            log::warn!("ignoring a command this build does not know: {body}");
            Outcome::NotRunning
        }
    }
}

/// Serves the commands addressed to this instance for the life of the
/// gateway (PostgreSQL; nothing to serve on SQLite).
pub fn serve(state: actix_web::web::Data<AppState>) {
    if !state.store.is_shared() {
        return;
    }
    actix::spawn(async move {
        let me = state.leases.instance().to_string();
        let mut news = state.store.news();
        loop {
            match state.store.take_commands(&me).await {
                Ok(commands) => {
                    // Each on its own: one that waits (an approval's queue)
                    // never holds up the others past their askers' wait.
                    for c in commands {
                        let state = state.clone();
                        actix::spawn(async move {
                            let outcome = execute(&state, &c.target, &c.body).await;
                            let answer = outcome.to_json();
                            if let Err(e) = state.store.answer_command(c.id, &answer).await {
                                log::warn!("cannot answer a command about {}: {e}", c.target);
                            }
                        });
                    }
                }
                Err(e) => log::warn!("cannot read the commands for this gateway: {e}"),
            }
            news.wait(
                crate::store::pg_listen::COMMANDS,
                &me,
                crate::store::commands::COMMAND_POLL,
            )
            .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_outcomes_survive_the_wire() {
        for op in [
            Op::StopRun,
            Op::SteerRun("look at the logs".into()),
            Op::Decide {
                approval_id: "appr_1".into(),
                approve: false,
            },
            Op::CancelResponse,
        ] {
            assert_eq!(Op::from_json(&op.to_json()), Some(op));
        }
        for o in [Outcome::Done, Outcome::NotRunning, Outcome::NotPending] {
            assert_eq!(Outcome::from_json(&o.to_json()), Some(o));
        }
        assert_eq!(Op::from_json(&json!({"op": "reboot"})), None);
        assert_eq!(Op::from_json(&json!({"op": "steer_run"})), None);
    }
}
