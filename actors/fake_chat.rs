//! A fake chat platform for actor tests: an actor that answers the outbox
//! messages, records every call with its (virtual) time, and can be told to
//! fail edits. Used by the stream preview's and the router's tests.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::outbox::{AppendStream, EditText, SendText, StartStream, StopStream, Typing};
use crate::platforms::{Capabilities, Measure, PaceRules, PlatformError};

/// An actix system on a paused tokio clock (time moves only when every
/// task waits), for the time-dependent actor tests.
pub fn paused_system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Test capabilities: `max_len` UTF-16 units, edits, typing every 4 s.
pub fn caps(max_len: usize) -> Capabilities {
    Capabilities {
        max_len,
        measure: Measure::Utf16,
        edit_floor: Some(Duration::from_millis(100)),
        typing_every: Some(Duration::from_secs(4)),
        render: |md| md.to_string(),
        pace: PaceRules {
            per_chat: Duration::ZERO,
            per_group: Duration::ZERO,
        },
    }
}

impl FakePlatform {
    /// A platform whose calls take `latency` to come back.
    pub fn new(log: Rc<RefCell<Log>>, latency: Duration) -> Self {
        Self {
            log,
            next_id: 0,
            latency,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Send {
        id: String,
        text: String,
    },
    Edit {
        id: String,
        text: String,
    },
    /// A native stream started, appended to, stopped.
    Start {
        id: String,
        text: String,
    },
    Append {
        id: String,
        text: String,
    },
    Stop {
        id: String,
        text: Option<String>,
    },
}

#[derive(Default)]
pub struct Log {
    pub calls: Vec<(Instant, Call)>,
    /// Results to return for the next edits (front first); empty = Ok.
    pub edit_errors: VecDeque<PlatformError>,
    /// Current text per message id.
    pub texts: std::collections::BTreeMap<String, String>,
    /// Typing indicators shown, by time.
    pub typing: Vec<Instant>,
    /// Results to return for the next native stream calls (front first).
    pub stream_errors: VecDeque<PlatformError>,
}

pub struct FakePlatform {
    log: Rc<RefCell<Log>>,
    next_id: u32,
    /// How long each call takes to come back.
    latency: Duration,
}

impl Actor for FakePlatform {
    type Context = Context<Self>;
}

impl Handler<SendText> for FakePlatform {
    type Result = ResponseFuture<Result<String, PlatformError>>;
    fn handle(&mut self, m: SendText, _: &mut Context<Self>) -> Self::Result {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let (log, latency) = (self.log.clone(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let mut l = log.borrow_mut();
            l.calls.push((
                Instant::now(),
                Call::Send {
                    id: id.clone(),
                    text: m.text.clone(),
                },
            ));
            l.texts.insert(id.clone(), m.text);
            Ok(id)
        })
    }
}

impl Handler<EditText> for FakePlatform {
    type Result = ResponseFuture<Result<(), PlatformError>>;
    fn handle(&mut self, m: EditText, _: &mut Context<Self>) -> Self::Result {
        let (log, latency) = (self.log.clone(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let mut l = log.borrow_mut();
            if let Some(e) = l.edit_errors.pop_front() {
                return Err(e);
            }
            l.calls.push((
                Instant::now(),
                Call::Edit {
                    id: m.message_id.clone(),
                    text: m.text.clone(),
                },
            ));
            l.texts.insert(m.message_id, m.text);
            Ok(())
        })
    }
}

impl Handler<Typing> for FakePlatform {
    type Result = ();
    fn handle(&mut self, _: Typing, _: &mut Context<Self>) {
        self.log.borrow_mut().typing.push(Instant::now());
    }
}

impl FakePlatform {
    /// Takes the next stream error, or records `call` and applies it.
    fn stream_call(&self, call: Call) -> Result<(), PlatformError> {
        let mut l = self.log.borrow_mut();
        if let Some(e) = l.stream_errors.pop_front() {
            return Err(e);
        }
        match &call {
            Call::Start { id, text } => {
                l.texts.insert(id.clone(), text.clone());
            }
            Call::Append { id, text }
            | Call::Stop {
                id,
                text: Some(text),
            } => {
                l.texts.entry(id.clone()).or_default().push_str(text);
            }
            _ => {}
        }
        l.calls.push((Instant::now(), call));
        Ok(())
    }
}

impl Handler<StartStream> for FakePlatform {
    type Result = ResponseFuture<Result<String, PlatformError>>;
    fn handle(&mut self, m: StartStream, ctx: &mut Context<Self>) -> Self::Result {
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        let (me, latency) = (ctx.address(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let call = Call::Start {
                id: id.clone(),
                text: m.text,
            };
            me.send(Record(call))
                .await
                .unwrap_or_else(|e| Err(PlatformError::Unavailable(e.to_string())))?;
            Ok(id)
        })
    }
}

impl Handler<AppendStream> for FakePlatform {
    type Result = ResponseFuture<Result<(), PlatformError>>;
    fn handle(&mut self, m: AppendStream, ctx: &mut Context<Self>) -> Self::Result {
        let (me, latency) = (ctx.address(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let call = Call::Append {
                id: m.id,
                text: m.text,
            };
            me.send(Record(call))
                .await
                .unwrap_or_else(|e| Err(PlatformError::Unavailable(e.to_string())))
        })
    }
}

impl Handler<StopStream> for FakePlatform {
    type Result = ResponseFuture<Result<(), PlatformError>>;
    fn handle(&mut self, m: StopStream, ctx: &mut Context<Self>) -> Self::Result {
        let (me, latency) = (ctx.address(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let call = Call::Stop {
                id: m.id,
                text: m.text,
            };
            me.send(Record(call))
                .await
                .unwrap_or_else(|e| Err(PlatformError::Unavailable(e.to_string())))
        })
    }
}

/// Records a stream call once its latency passed.
#[derive(Message)]
#[rtype(result = "Result<(), PlatformError>")]
struct Record(Call);

impl Handler<Record> for FakePlatform {
    type Result = Result<(), PlatformError>;
    fn handle(&mut self, m: Record, _: &mut Context<Self>) -> Self::Result {
        self.stream_call(m.0)
    }
}
