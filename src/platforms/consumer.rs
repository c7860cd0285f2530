//! One consumer per platform credential (`scale-out.md`): Telegram's
//! `getUpdates`, a Discord Gateway session and a Slack socket each have
//! exactly one instance reading them, the holder of the credential's
//! consumer lease in the store.
//!
//! The holder renews its lease every [`RENEW_EVERY`] for [`LEASE_TTL`]; every
//! other instance stands by and tries to take it every [`STANDBY_RETRY`], so
//! when the holder dies another takes over within `LEASE_TTL +
//! STANDBY_RETRY` (12 s) and goes on from the stored offset or session. A
//! holder that cannot confirm its lease before it could have expired stops
//! reading at once: two readers would see each message twice. A stopping
//! instance releases its leases at once ([`Leases::release_all`]); on
//! PostgreSQL the release is announced (`NOTIFY`) and a standby takes over
//! at once, on SQLite at its next try.
//!
//! With the embedded SQLite store the same rule keeps a second gateway
//! started on the same home (by hand beside the service, say) from fighting
//! the first over the bot: it stands by until the first stops. There, the
//! gateways are on one machine and can tell exactly when a holder's process
//! ended ([`Liveness`]): its lease is then taken at once, not at its expiry,
//! so a gateway restarted after a crash reads its bots again at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::liveness::Liveness;
use crate::platform_status::{LinkState, PlatformStatus};
use crate::store::Store;
use crate::store::leases::Lease;

/// How long a consumer lease lasts unless renewed (the spec's bound: ≤ 10 s).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often a standby instance tries to take the lease.
pub const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// The lease name of a platform credential: the platform and a digest of
/// the credential, never the credential itself (lease names show in
/// `/health/detailed` and the database).
pub fn lease_name(platform: &str, credential: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, credential.as_bytes());
    let short: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("consumer:{platform}:{short}")
}

/// The lease that says instance `instance` is running: with a shared store
/// (PostgreSQL) instances on other machines cannot see each other's lock
/// files, so each keeps this lease while it runs (see [`Leases::announce`]).
fn presence_name(instance: &str) -> String {
    format!("instance:{instance}")
}

/// This instance's id by default: `<hostname>-<pid>`.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// The consumer leases of this instance; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    instance: String,
    /// One lock for both, so a lease taken while the instance stops is
    /// either released by [`Leases::release_all`] or never registered.
    held: Mutex<Holdings>,
    /// Which gateways of this home are alive (SQLite: one home, one machine).
    liveness: Option<Liveness>,
    /// This instance's presence lease, once announced.
    presence: Mutex<Option<Presence>>,
}

/// The renewer of an instance's presence lease, and the token that holds it.
type Presence = (tokio::task::AbortHandle, String);

#[derive(Default)]
struct Holdings {
    /// The leases held now: name, the switch that tells their consumer to
    /// stop, and their renewer (stopped before a lease is released, so no
    /// renewal can take it back).
    leases: Vec<(String, watch::Sender<bool>, tokio::task::AbortHandle)>,
    /// Set by [`Leases::release_all`]: nothing is taken any more.
    stopping: bool,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

/// A consumer lease this instance holds. Its consumer reads only while
/// [`Held::is_held`]; dropping it gives the lease up.
pub struct Held {
    name: String,
    leases: Leases,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Leases {
    /// The leases of instance `instance` in `store`.
    /// The leases of instance `instance` in `store`. With `liveness` (the
    /// gateways of one home), a lease whose holder's process has ended is
    /// taken over at once instead of after its expiry.
    pub fn new(store: Store, instance: &str, liveness: Option<Liveness>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                instance: instance.to_string(),
                held: Mutex::default(),
                liveness,
                presence: Mutex::default(),
            }),
        }
    }

    /// Says, in the store, that this instance runs, until [`Leases::depart`]:
    /// gateways on other machines sharing the store then leave the work it
    /// opened to it ([`Leases::alive_elsewhere`]). `false` when a running
    /// instance already has this id (two gateways must never share one: each
    /// would take the other's leases for its own).
    pub async fn announce(&self) -> Result<bool, crate::db::StoreError> {
        let me = self.instance();
        let lost = format!(
            "another gateway runs with the instance id {me:?}; give each its own \
             storage.instance_id (HERMES_INSTANCE_ID)"
        );
        let Some((token, renewer)) = self.take_renewed(&presence_name(me), lost).await? else {
            return Ok(false);
        };
        if let Some((old, _)) = self.presence().replace((renewer, token)) {
            old.abort();
        }
        Ok(true)
    }

    /// Takes lease `name` for a holder token of its own (this instance's id
    /// and a random part: a second holder from this instance, or a second
    /// process with its id, is told apart) and keeps it renewed every
    /// [`RENEW_EVERY`] until the returned renewer is aborted; `lost` is
    /// logged if a renewal finds it taken. `None` while another holds it.
    async fn take_renewed(
        &self,
        name: &str,
        lost: String,
    ) -> Result<Option<(String, tokio::task::AbortHandle)>, crate::db::StoreError> {
        let store = self.inner.store.clone();
        let token = format!("{}#{}", self.instance(), uuid::Uuid::new_v4().simple());
        let Some(lease) = store.acquire_lease(name, &token, LEASE_TTL).await? else {
            return Ok(None);
        };
        let (name, holder) = (name.to_string(), token.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match store.acquire_lease(&name, &holder, LEASE_TTL).await {
                    Ok(Some(l)) if l.generation == lease.generation => {}
                    Ok(_) => log::error!("{lost}"),
                    Err(e) => log::warn!("cannot renew the lease {name}: {e}"),
                }
            }
        });
        Ok(Some((token, renewer.abort_handle())))
    }

    /// Ends this instance's presence ([`Leases::announce`]): the very last
    /// step of a stop, once its own answers are finished.
    pub async fn depart(&self) {
        let presence = self.presence().take();
        if let Some((renewer, token)) = presence {
            renewer.abort();
            let name = presence_name(self.instance());
            if let Err(e) = self.inner.store.release_lease(&name, &token).await {
                log::warn!("cannot end this instance's presence: {e}");
            }
        }
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, Option<Presence>> {
        self.inner
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether work opened by gateway `instance` (a delivery obligation) is
    /// another live gateway's to finish: `instance` is not this one, and
    /// either its process on this home holds its lock, or its presence lease
    /// in the store is live (a gateway on another machine). A store error
    /// counts as alive: finishing another gateway's answer twice is worse
    /// than finishing it late.
    pub async fn alive_elsewhere(&self, instance: Option<&str>) -> bool {
        let Some(other) = instance.filter(|&i| i != self.instance()) else {
            return false;
        };
        if let Some(l) = &self.inner.liveness {
            // A gateway of this home: its lock tells, when it has one.
            if l.is_alive(other) {
                return true;
            }
            if l.is_gone(other) {
                return false;
            }
        }
        match self.inner.store.live_lease(&presence_name(other)).await {
            Ok(live) => live.is_some(),
            Err(e) => {
                log::warn!("cannot tell whether gateway {other} runs: {e}");
                true
            }
        }
    }

    /// Whether work marked as run by gateway `instance` (a live response, an
    /// active run) was cut off: no instance recorded (older rows), one that
    /// is no longer alive, or this one's own id `at_start` (its earlier
    /// process; later, what it runs now).
    pub async fn cut_off(&self, instance: Option<&str>, at_start: bool) -> bool {
        match instance {
            None => true,
            Some(i) if i == self.instance() => at_start,
            other => !self.alive_elsewhere(other).await,
        }
    }

    /// Takes lease `name` for as long as the returned [`TurnLease`] lives
    /// (one running turn of a session across instances), renewing it every
    /// [`RENEW_EVERY`]; `None` while another instance holds it.
    pub async fn take_for_turn(
        &self,
        name: &str,
    ) -> Result<Option<TurnLease>, crate::db::StoreError> {
        // The turn goes on if another instance took it meanwhile (which the
        // lease exists to prevent): say so.
        let lost = format!("{name}: another instance took it during a turn");
        Ok(self
            .take_renewed(name, lost)
            .await?
            .map(|(holder, renewer)| TurnLease {
                name: name.to_string(),
                holder,
                store: self.inner.store.clone(),
                renewer,
            }))
    }

    /// Whether `holder` is a gateway of this home whose process has ended.
    fn is_gone(&self, holder: &str) -> bool {
        self.inner
            .liveness
            .as_ref()
            .is_some_and(|l| l.is_gone(holder))
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The storage backend's name (`sqlite`, `postgres`).
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// The store the leases are kept in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Waits until this instance holds the consumer lease of `credential`
    /// on `platform`, standing by (and saying so in `status`) while another
    /// instance holds it. `None` once the gateway is stopping.
    pub async fn hold(
        &self,
        platform: &str,
        credential: &str,
        status: &PlatformStatus,
    ) -> Option<Held> {
        let name = lease_name(platform, credential);
        let me = self.instance();
        let mut standing_by = false;
        // Subscribed before the first try: a release between a try and the
        // wait after it is not missed.
        let mut news = self.inner.store.news();
        loop {
            if self.holdings().stopping {
                return None;
            }
            let asked = Instant::now();
            let store = &self.inner.store;
            let mut taken = store.acquire_lease(&name, me, LEASE_TTL).await;
            let mut holder = None;
            if let Ok(None) = taken {
                holder = store.lease(&name).await.ok().flatten();
                if let Some(gone) = holder.as_ref().filter(|l| self.is_gone(&l.holder)) {
                    log::info!("{platform}: {} has ended; taking over at once", gone.holder);
                    taken = store
                        .take_over_lease(&name, me, &gone.holder, LEASE_TTL)
                        .await;
                }
            }
            match taken {
                Ok(Some(lease)) => {
                    if standing_by {
                        log::info!("{platform}: took over from the instance that held it");
                    }
                    show(status, platform, &lease);
                    return self.start_renewing(platform, name, lease, asked, status);
                }
                Ok(None) => {
                    let who = holder.as_ref().map_or("another instance", |l| &l.holder);
                    if !standing_by {
                        log::info!("{platform}: {who} reads this bot; standing by");
                        standing_by = true;
                    }
                    status.set(
                        platform,
                        LinkState::Standby,
                        Some(format!("{who} reads this bot; standing by")),
                    );
                    if let Some(l) = &holder {
                        show(status, platform, l);
                    }
                }
                Err(e) => {
                    log::warn!("{platform}: cannot take the consumer lease: {e}");
                    status.set(
                        platform,
                        LinkState::Connecting,
                        Some(format!("cannot take the consumer lease: {e}")),
                    );
                }
            }
            news.wait(crate::store::pg_listen::LEASES, &name, STANDBY_RETRY)
                .await;
        }
    }

    fn holdings(&self) -> std::sync::MutexGuard<'_, Holdings> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a lease just taken and starts renewing it; gives it back
    /// (`None`) when the instance began stopping meanwhile.
    fn start_renewing(
        &self,
        platform: &str,
        name: String,
        lease: Lease,
        asked: Instant,
        status: &PlatformStatus,
    ) -> Option<Held> {
        let (tell, lost) = watch::channel(false);
        let mut holdings = self.holdings();
        if holdings.stopping {
            drop(self.inner.store.release_lease(&name, self.instance()));
            return None;
        }
        let renewer = tokio::spawn(renew(
            self.inner.store.clone(),
            name.clone(),
            self.inner.instance.clone(),
            lease.generation,
            asked + LEASE_TTL,
            tell.clone(),
            (platform.to_string(), status.clone()),
        ));
        holdings
            .leases
            .push((name.clone(), tell, renewer.abort_handle()));
        drop(holdings);
        Some(Held {
            name,
            leases: self.clone(),
            lost,
            renewer,
        })
    }

    /// Gives up every lease at once (a stop or a drain): their consumers
    /// stop reading, the store frees them for a standby instance, and no
    /// lease is taken again by this instance.
    pub async fn release_all(&self) {
        let held = {
            let mut holdings = self.holdings();
            holdings.stopping = true;
            std::mem::take(&mut holdings.leases)
        };
        for (name, tell, renewer) in held {
            renewer.abort();
            let _ = tell.send(true);
            match self.inner.store.release_lease(&name, self.instance()).await {
                Ok(_) => log::info!("released the consumer lease {name}"),
                Err(e) => log::warn!("cannot release the consumer lease {name}: {e}"),
            }
        }
    }
}

/// A lease held while a turn runs ([`Leases::take_for_turn`]); released
/// when dropped.
pub struct TurnLease {
    name: String,
    holder: String,
    store: Store,
    renewer: tokio::task::AbortHandle,
}

impl Drop for TurnLease {
    fn drop(&mut self) {
        self.renewer.abort();
        // Queued at once: the next turn, here or elsewhere, may start.
        drop(self.store.release_lease(&self.name, &self.holder));
    }
}

/// Shows a lease in the platform's `/health/detailed` entry.
fn show(status: &PlatformStatus, platform: &str, lease: &Lease) {
    status.lease(
        platform,
        json!({"holder": lease.holder, "expires_at": lease.expires_at_ms / 1000}),
    );
}

/// Renews a lease until it is lost or its [`Held`] is dropped. A renewal
/// that finds another generation means another instance held the lease in
/// between: the consumer's state (an offset read at the start) is stale, so
/// that counts as lost too.
async fn renew(
    store: Store,
    name: String,
    holder: String,
    generation: i64,
    mut valid_until: Instant,
    tell: watch::Sender<bool>,
    (platform, status): (String, PlatformStatus),
) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        if *tell.borrow() {
            return; // Given up meanwhile: never take it back.
        }
        let asked = Instant::now();
        match store.acquire_lease(&name, &holder, LEASE_TTL).await {
            Ok(Some(l)) if l.generation == generation => {
                valid_until = asked + LEASE_TTL;
                show(&status, &platform, &l);
            }
            Ok(_) => {
                log::warn!("{platform}: another instance took over this bot");
                let _ = tell.send(true);
                return;
            }
            // The lease may run out before the next try: stop reading now.
            Err(e) if Instant::now() + RENEW_EVERY >= valid_until => {
                log::warn!("{platform}: cannot renew the consumer lease ({e}); stopping reading");
                let _ = tell.send(true);
                return;
            }
            Err(e) => log::warn!("{platform}: cannot renew the consumer lease ({e}); retrying"),
        }
    }
}

impl Held {
    /// Whether this instance still holds the lease and may read.
    pub fn is_held(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Resolves once the lease is lost or given up.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
        let still_held = self.is_held();
        self.leases
            .holdings()
            .leases
            .retain(|(n, _, _)| *n != self.name);
        // A consumer that ends while it holds its lease (a fatal error, the
        // actor stopping) frees it for a standby instance.
        if still_held {
            drop(
                self.leases
                    .inner
                    .store
                    .release_lease(&self.name, self.leases.instance()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db =
            crate::db::Db::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        (dir, Store::from(db))
    }

    /// Waits (bounded) for `cond`. The clock is paused and the store does
    /// real I/O, so this polls in short virtual steps rather than setting a
    /// deadline that would pass while the store answers.
    async fn eventually(cond: impl Fn() -> bool) -> bool {
        for _ in 0..2_000 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::task::yield_now().await;
        }
        false
    }

    fn status() -> PlatformStatus {
        let s = PlatformStatus::default();
        s.set("p", LinkState::Connecting, None);
        s
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_keeps_its_lease_and_stops_reading_once_another_took_it() {
        let (_dir, store) = sqlite();
        let status = status();
        let a = Leases::new(store.clone(), "a", None);
        let held = a
            .hold("p", "token", &status)
            .await
            .unwrap_or_else(|| panic!("a free lease is taken"));
        let name = lease_name("p", "token");
        // Three renewals later it still holds it, in the same generation.
        tokio::time::sleep(RENEW_EVERY * 3 + Duration::from_millis(1)).await;
        assert!(held.is_held());
        let l = store.lease(&name).await.ok().flatten();
        assert_eq!(l.map(|l| (l.holder, l.generation)), Some(("a".into(), 1)));
        assert_eq!(
            status.snapshot()["p"]
                .lease
                .as_ref()
                .map(|l| l["holder"].clone()),
            Some("a".into())
        );
        // Another instance takes it over (as it would from a gone holder):
        // the next renewal sees it and the consumer is told to stop.
        let taken = store.take_over_lease(&name, "b", "a", LEASE_TTL).await;
        assert!(matches!(taken, Ok(Some(_))), "{taken:?}");
        assert!(eventually(|| !held.is_held()).await, "told to stop");
        // It stands by now: the lease is b's.
        let standby = {
            let (a, status) = (a.clone(), status.clone());
            tokio::spawn(async move { a.hold("p", "token", &status).await.is_some() })
        };
        let st = status.clone();
        assert!(eventually(move || st.snapshot()["p"].state == LinkState::Standby).await);
        assert!(!standby.is_finished(), "a waits while b holds it");
        standby.abort();
    }

    #[tokio::test]
    async fn an_announced_instance_is_alive_to_the_others_until_it_departs() {
        for b in crate::store::test_backends::all().await {
            let a = Leases::new(b.store.clone(), "a", None);
            let other = Leases::new(b.store.clone(), "b", None);
            // Nothing known of `a` yet: its work is anyone's to finish.
            assert!(!other.alive_elsewhere(Some("a")).await);
            assert!(a.announce().await.unwrap_or_else(|e| panic!("{e}")));
            assert!(other.alive_elsewhere(Some("a")).await);
            // Never "elsewhere" for its own work, nor for work of no instance.
            assert!(!a.alive_elsewhere(Some("a")).await);
            assert!(!other.alive_elsewhere(None).await);
            // A second gateway with the same id is refused while `a` runs.
            let twin = Leases::new(b.store.clone(), "a", None);
            assert!(!twin.announce().await.unwrap_or_else(|e| panic!("{e}")));
            a.depart().await;
            assert!(!other.alive_elsewhere(Some("a")).await);
            assert!(twin.announce().await.unwrap_or_else(|e| panic!("{e}")));
            twin.depart().await;
        }
    }

    #[tokio::test]
    async fn a_turn_lease_is_one_instances_until_dropped() {
        for b in crate::store::test_backends::all().await {
            let (a, other) = (
                Leases::new(b.store.clone(), "a", None),
                Leases::new(b.store.clone(), "b", None),
            );
            let held = a.take_for_turn("session:api:s1").await;
            let held = held.unwrap_or_else(|e| panic!("{e}"));
            assert!(held.is_some());
            let busy = other.take_for_turn("session:api:s1").await;
            assert!(matches!(busy, Ok(None)), "{}", b.store.backend());
            // Other sessions are free.
            assert!(matches!(
                other.take_for_turn("session:api:s2").await,
                Ok(Some(_))
            ));
            drop(held);
            // The release is queued as the lease drops; the store answers
            // in order, so the next take sees it.
            let next = other.take_for_turn("session:api:s1").await;
            assert!(matches!(next, Ok(Some(_))), "{}", b.store.backend());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn release_all_frees_the_leases_at_once_and_takes_none_again() {
        let (_dir, store) = sqlite();
        let status = status();
        let a = Leases::new(store.clone(), "a", None);
        let held = a.hold("p", "token", &status).await;
        let held = held.unwrap_or_else(|| panic!("taken"));
        a.release_all().await;
        assert!(!held.is_held());
        let l = store.lease(&lease_name("p", "token")).await.ok().flatten();
        assert_eq!(l.map(|l| l.expires_at_ms), Some(0));
        // Another instance takes it at once; this one takes nothing again.
        let b = Leases::new(store.clone(), "b", None);
        let taken = {
            let status = status.clone();
            tokio::spawn(async move { b.hold("p", "token", &status).await.is_some() })
        };
        assert!(eventually(|| taken.is_finished()).await, "b stands by");
        assert!(matches!(taken.await, Ok(true)));
        assert!(a.hold("p", "other", &status).await.is_none());
    }

    #[test]
    fn lease_names_never_hold_the_credential() {
        let n = lease_name("telegram", "123456:SECRET-token");
        assert!(n.starts_with("consumer:telegram:"), "{n}");
        assert!(!n.contains("SECRET"), "{n}");
        assert_eq!(n.len(), "consumer:telegram:".len() + 16);
        assert_ne!(n, lease_name("telegram", "123456:other"));
        assert_ne!(n, lease_name("discord", "123456:SECRET-token"));
    }
}
