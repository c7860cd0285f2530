//! A fake chat platform for actor tests: an actor that answers the outbox
//! messages, records every call with its (virtual) time, and can be told to
//! fail edits. Used by the stream preview's and the router's tests.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::outbox::{EditText, SendText, Typing};
use crate::platforms::{Capabilities, Measure, PaceRules, PlatformError};

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
    Send { id: String, text: String },
    Edit { id: String, text: String },
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
