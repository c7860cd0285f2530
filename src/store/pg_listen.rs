//! PostgreSQL `LISTEN`/`NOTIFY` (`scale-out.md`): what one instance does
//! that others should act on at once (a lease given up as it stops) is
//! announced on a channel, and every instance hears it on one connection of
//! its own, outside the pool.
//!
//! A notification is a hint, never the only way news travels: while the
//! listening connection is down (it reconnects every [`RECONNECT_AFTER`])
//! the waiters fall back to their timers and re-read the store.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

/// The channel a released lease's name is announced on.
pub const LEASES: &str = "hermes_leases";
/// The channel the id of a stream with new events is announced on.
pub const EVENTS: &str = "hermes_events";
/// The channel the instance a command is for is announced on.
pub const COMMANDS: &str = "hermes_commands";
/// The channel the id of an answered command is announced on.
pub const ANSWERS: &str = "hermes_answers";
/// Every channel an instance listens on.
const CHANNELS: &[&str] = &[LEASES, EVENTS, COMMANDS, ANSWERS];
/// How long the listener waits before connecting again after losing its
/// connection (or failing to open one).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Notifications kept for a subscriber that has not read them yet; one that
/// falls further behind misses the oldest (and re-reads the store on its
/// timer, as when the connection is down).
pub const BUFFER: usize = 256;

/// One notification: its channel and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub channel: String,
    pub payload: String,
}

/// Listens on [`CHANNELS`] with a connection of its own and passes each
/// notification to `tx`, connecting again whenever the connection ends.
/// Runs until its runtime stops.
pub async fn run<T>(config: tokio_postgres::Config, tls: T, tx: broadcast::Sender<Notice>)
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut said_down = false;
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                // The connection must be polled for the LISTEN to complete,
                // so its messages are read on a task of their own.
                let forward = {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                        while let Some(Ok(m)) = messages.next().await {
                            if let AsyncMessage::Notification(n) = m {
                                let _ = tx.send(Notice {
                                    channel: n.channel().to_string(),
                                    payload: n.payload().to_string(),
                                });
                            }
                        }
                    })
                };
                let listen: String = CHANNELS.iter().map(|c| format!("LISTEN {c};")).collect();
                match client.batch_execute(&listen).await {
                    Ok(()) => {
                        if said_down {
                            log::info!("PostgreSQL notifications: listening again");
                        }
                        // Ends when the connection does; `client` lives till then.
                        let _ = forward.await;
                        log::warn!("PostgreSQL notifications: connection lost; reconnecting");
                    }
                    Err(e) => {
                        forward.abort();
                        log::warn!("PostgreSQL notifications: cannot listen ({e}); retrying");
                    }
                }
                said_down = true;
                drop(client);
            }
            Err(e) => {
                if !said_down {
                    log::warn!("PostgreSQL notifications: cannot connect ({e}); retrying");
                    said_down = true;
                }
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Waits up to `limit`, or less once `rx` hears `payload` on `channel` (or
/// may have missed news: it lagged behind). Callers re-read the store
/// either way, so waking early is always safe.
pub async fn wait_for(
    rx: &mut broadcast::Receiver<Notice>,
    channel: &str,
    payload: &str,
    limit: Duration,
) {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            notice = rx.recv() => match notice {
                Ok(n) if n.channel == channel && n.payload == payload => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    deadline.await;
                    return;
                }
            },
        }
    }
}

/// What other instances announce, as this instance hears it from the
/// moment this was made ([`super::Store::news`]). On SQLite there is no one
/// to hear: waiting is plain waiting.
#[derive(Default)]
pub struct News(Option<broadcast::Receiver<Notice>>);

impl News {
    /// News from `rx`.
    pub fn from_receiver(rx: broadcast::Receiver<Notice>) -> Self {
        Self(Some(rx))
    }

    /// Waits `limit`, or less once `payload` is announced on `channel` (see
    /// [`wait_for`]).
    pub async fn wait(&mut self, channel: &str, payload: &str, limit: Duration) {
        match &mut self.0 {
            Some(rx) => wait_for(rx, channel, payload, limit).await,
            None => tokio::time::sleep(limit).await,
        }
    }
}
