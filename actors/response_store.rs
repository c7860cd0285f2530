//! `ResponseStoreActor`: the one owner of stored Responses API responses.
//!
//! Hot responses live in an LRU cache bounded by entries and bytes
//! (`api_server.response_store.cache_size`, `cache_mb`);
//! every response is also in `state.db`, written by the database thread, so
//! nothing is lost on restart and no actor or HTTP worker ever blocks on disk.
//! Handlers answer from the cache at once and otherwise wait on the database
//! without blocking the actor (`ResponseActFuture`, never `ctx.wait`).
//!
//! Capacity (`max_responses`) and age (`ttl_days`) are enforced after every
//! write and hourly; the oldest go first, and conversation names that pointed
//! at an evicted or deleted response are cleared with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::ByteLru;
use actix::prelude::*;
use serde_json::Value;

use crate::db::StoreError;
use crate::openai::Message;
use crate::response_db::{StoredApproval, StoredResponse};
use crate::store::Store;

/// How often responses past their age are removed.
const TTL_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Stores a response (and points `conversation` at it). Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Put {
    pub response: StoredResponse,
    pub conversation: Option<String>,
    /// Events of the response written in the same transaction (its last
    /// ones, with its final state).
    pub events: Vec<Arc<crate::journal::Event>>,
}

/// One response by id. Sent by: `GET /v1/responses/{id}` and chaining.
#[derive(Message)]
#[rtype(result = "Result<Option<Arc<StoredResponse>>, StoreError>")]
pub struct Get {
    pub id: String,
}

/// Deletes a response; answers whether it existed. Sent by: `DELETE /v1/responses/{id}`.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Delete {
    pub id: String,
}

/// The latest response id of a conversation name. Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<Option<String>, StoreError>")]
pub struct ResolveConversation {
    pub name: String,
}

/// The conversation up to and including a response, oldest message first;
/// `None` when the response does not exist. Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<Message>>, StoreError>")]
pub struct Chain {
    pub id: String,
}

/// The stored items with these ids among `owner`'s responses (for
/// `item_reference`). Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<HashMap<String, Value>, StoreError>")]
pub struct ResolveItems {
    pub owner: String,
    pub ids: Vec<String>,
}

/// `owner`'s approvals with these ids. Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<Vec<StoredApproval>, StoreError>")]
pub struct FindApprovals {
    pub owner: String,
    pub ids: Vec<String>,
}

/// Marks approvals answered; false when one already was. Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct AnswerApprovals {
    pub ids: Vec<String>,
}

/// Whether `id` is `head` or one of its ancestors. Sent by: the responses route.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct InChain {
    pub head: String,
    pub id: String,
}

/// Sizes and ages of the store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cache_size: usize,
    /// Bytes the cached responses may take.
    pub cache_bytes: usize,
    pub max_responses: usize,
    pub ttl: Duration,
}

/// The actor.
pub struct ResponseStoreActor {
    store: Store,
    cache: ByteLru<String, Arc<StoredResponse>>,
    limits: Limits,
    /// Responses on disk (kept in memory to avoid counting on every write).
    count: usize,
}

fn now() -> i64 {
    crate::clock::unix_now() as i64
}

impl ResponseStoreActor {
    /// A store over `store`; `count` is the number of responses already stored.
    pub fn new(store: Store, limits: Limits, count: usize) -> Self {
        Self {
            store,
            cache: ByteLru::new(limits.cache_bytes, limits.cache_size),
            limits,
            count,
        }
    }

    /// Whether other instances share the store (their writes and deletes
    /// do not pass through this actor).
    fn shared(&self) -> bool {
        self.store.is_shared()
    }

    fn min_created_at(&self) -> i64 {
        now() - self.limits.ttl.as_secs() as i64
    }

    /// Runs eviction on the database thread and drops evicted ids from the cache.
    fn evict(&mut self, ctx: &mut Context<Self>) {
        let (max, min_at) = (self.limits.max_responses, self.min_created_at());
        let store = self.store.clone();
        let job = async move {
            // `/v1/runs` runs are kept as long as responses are.
            let runs = store.evict_runs(min_at).await?;
            if runs > 0 {
                log::info!("run store: evicted {runs} finished run(s)");
            }
            store.evict_responses(max, min_at).await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, _| match res {
            Ok(ids) => {
                if !ids.is_empty() {
                    log::info!("response store: evicted {} response(s)", ids.len());
                }
                act.count = act.count.saturating_sub(ids.len());
                for id in ids {
                    act.cache.pop(&id);
                }
            }
            Err(e) => log::warn!("response store eviction failed: {e}"),
        }));
    }

    /// Caches a response, counting every part it holds.
    fn cache(&mut self, r: Arc<StoredResponse>) {
        let size = r.id.len()
            + r.session_id.len()
            + r.input_items.len()
            + r.turn_messages.len()
            + r.response.len()
            + r.instructions.as_ref().map_or(0, String::len);
        self.cache.put(r.id.clone(), r, size);
    }

    /// Parses a chain of `turn_messages` JSON arrays into one conversation.
    fn parse_chain(turns: &[&str]) -> Vec<Message> {
        let mut out = Vec::new();
        for t in turns {
            match serde_json::from_str::<Vec<Message>>(t) {
                Ok(msgs) => out.extend(msgs),
                Err(e) => log::warn!("response store: skipping an unreadable stored turn: {e}"),
            }
        }
        out
    }
}

impl Actor for ResponseStoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.evict(ctx);
        ctx.run_interval(TTL_SWEEP_EVERY, |act, ctx| act.evict(ctx));
    }
}

impl Handler<Put> for ResponseStoreActor {
    type Result = ResponseActFuture<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: Put, _: &mut Context<Self>) -> Self::Result {
        let stored = Arc::new(msg.response);
        let id = stored.id.clone();
        // Cached at once: a GET while the write commits sees it. With other
        // instances a running response is not cached: another may end it.
        if !(stored.live && self.shared()) {
            self.cache(stored.clone());
        }
        let (conversation, events) = (msg.conversation, msg.events);
        let job = self
            .store
            .insert_response((*stored).clone(), conversation, events);
        Box::pin(job.into_actor(self).map(move |res, act, ctx| {
            match &res {
                Ok(()) => {
                    act.count += 1;
                    if act.count > act.limits.max_responses {
                        act.evict(ctx);
                    }
                }
                // Not stored: nobody may find it.
                Err(_) => drop(act.cache.pop(&id)),
            }
            res
        }))
    }
}

impl Handler<Get> for ResponseStoreActor {
    type Result = ResponseActFuture<Self, Result<Option<Arc<StoredResponse>>, StoreError>>;

    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        if let Some(hit) = self.cache.get(&msg.id) {
            let hit = hit.clone();
            if !self.shared() {
                return Box::pin(actix::fut::ready(Ok(Some(hit))));
            }
            // Another instance may have deleted it (and its note of that may
            // come late): served only while its row exists.
            let job = self.store.response_exists(&msg.id);
            return Box::pin(job.into_actor(self).map(move |res, act, _| {
                if res? {
                    return Ok(Some(hit));
                }
                act.cache.pop(&hit.id);
                Ok(None)
            }));
        }
        let job = self.store.response(&msg.id);
        Box::pin(job.into_actor(self).map(|res, act, _| {
            let found = res?.map(Arc::new);
            if let Some(r) = found.as_ref().filter(|r| !(r.live && act.shared())) {
                act.cache(r.clone());
            }
            Ok(found)
        }))
    }
}

impl Handler<Delete> for ResponseStoreActor {
    type Result = ResponseActFuture<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: Delete, _: &mut Context<Self>) -> Self::Result {
        self.cache.pop(&msg.id);
        let job = self.store.delete_response(&msg.id);
        Box::pin(job.into_actor(self).map(|res, act, _| {
            if let Ok(true) = res {
                act.count = act.count.saturating_sub(1);
            }
            res
        }))
    }
}

impl Handler<Chain> for ResponseStoreActor {
    type Result = ResponseActFuture<Self, Result<Option<Vec<Message>>, StoreError>>;

    fn handle(&mut self, msg: Chain, _: &mut Context<Self>) -> Self::Result {
        // Hot chains are walked in the cache; any gap sends the whole walk to
        // disk. With other instances (which may delete a link) always on disk.
        let mut turns: Vec<Arc<StoredResponse>> = Vec::new();
        let mut next = (!self.shared()).then(|| msg.id.clone());
        while let Some(id) = next {
            match self.cache.peek(&id) {
                Some(r) => {
                    next = r.previous_id.clone();
                    turns.push(r.clone());
                }
                None => {
                    turns.clear();
                    next = Some(id);
                    break;
                }
            }
        }
        if next.is_none() && !turns.is_empty() {
            let texts: Vec<&str> = turns
                .iter()
                .rev()
                .map(|r| r.turn_messages.as_str())
                .collect();
            let conversation = Self::parse_chain(&texts);
            return Box::pin(actix::fut::ready(Ok(Some(conversation))));
        }
        let job = self.store.response_chain(&msg.id);
        Box::pin(job.into_actor(self).map(|res, _, _| {
            let turns = res?;
            if turns.is_empty() {
                return Ok(None);
            }
            let texts: Vec<&str> = turns.iter().map(String::as_str).collect();
            Ok(Some(Self::parse_chain(&texts)))
        }))
    }
}

/// A handler that only runs one store operation.
macro_rules! on_store {
    ($msg:ty, $out:ty, |$m:ident, $s:ident| $body:expr) => {
        impl Handler<$msg> for ResponseStoreActor {
            type Result = ResponseActFuture<Self, Result<$out, StoreError>>;

            fn handle(&mut self, $m: $msg, _: &mut Context<Self>) -> Self::Result {
                let $s = &self.store;
                Box::pin($body.into_actor(self))
            }
        }
    };
}

on_store!(ResolveItems, HashMap<String, Value>, |m, s| s
    .response_items(&m.owner, m.ids));
on_store!(FindApprovals, Vec<StoredApproval>, |m, s| s
    .approvals(&m.owner, m.ids));
on_store!(AnswerApprovals, bool, |m, s| s.answer_approvals(m.ids));
on_store!(InChain, bool, |m, s| s.in_chain(&m.head, &m.id));
on_store!(ResolveConversation, Option<String>, |m, s| s
    .conversation(&m.name));
