//! Where each chat platform stands (`connected`, `connecting`, `failed`,
//! `standby`),
//! for `/health/detailed`, `hermes_platform_up` and the systemd status line.
//! Platform actors report into it; readers take a snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Where a platform's connection stands.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Starting, or reconnecting after an error.
    Connecting,
    /// Reconnecting to go on with the same session (Discord's resume).
    Resuming,
    /// Receiving and sending.
    Connected,
    /// Given up (a rejected token, a fatal close): the reason says what to do.
    Failed,
    /// Another instance reads this bot; this one takes over if it stops
    /// (`platforms::consumer`).
    Standby,
}

impl LinkState {
    /// As health and the status line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Resuming => "resuming",
            Self::Connected => "connected",
            Self::Failed => "failed",
            Self::Standby => "standby",
        }
    }
}

/// One platform's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlatformState {
    pub state: LinkState,
    /// Why it is not connected, in words for the operator (no secrets).
    pub error: Option<String>,
    /// Unix time of the last change.
    pub since: u64,
    /// What the platform adds about its link (heartbeat latency, last
    /// sequence number, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<&'static str, serde_json::Value>,
    /// Who reads this bot and until when (`{"holder", "expires_at"}`), once
    /// a consumer lease was looked at (`platforms::consumer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<serde_json::Value>,
}

/// The registry; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PlatformStatus {
    inner: Arc<Mutex<BTreeMap<String, PlatformState>>>,
}

impl PlatformStatus {
    /// Records a platform's state.
    pub fn set(&self, platform: &str, state: LinkState, error: Option<String>) {
        let since = crate::clock::unix_now();
        let error = error.map(|e| crate::secrets::redact(&e));
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (details, lease) = map
            .remove(platform)
            .map(|old| (old.details, old.lease))
            .unwrap_or_default();
        map.insert(
            platform.to_string(),
            PlatformState {
                state,
                error,
                since,
                details,
                lease,
            },
        );
    }

    /// Records one detail of a platform's link (shown in `/health/detailed`).
    pub fn detail(&self, platform: &str, key: &'static str, value: serde_json::Value) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get_mut(platform) {
            p.details.insert(key, value);
        }
    }

    /// Records who holds a platform's consumer lease (shown in `/health/detailed`).
    pub fn lease(&self, platform: &str, lease: serde_json::Value) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get_mut(platform) {
            p.lease = Some(lease);
        }
    }

    /// Every platform's state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, PlatformState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `telegram connected, discord failed` (for the systemd status line).
    pub fn summary(&self) -> String {
        let snap = self.snapshot();
        if snap.is_empty() {
            return "no chat platforms".into();
        }
        snap.iter()
            .map(|(k, v)| match (&v.state, &v.error) {
                (LinkState::Failed, Some(why)) => format!("{k} failed ({why})"),
                (state, _) => format!("{k} {}", state.as_str()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
