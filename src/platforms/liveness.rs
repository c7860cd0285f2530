//! Which gateways on this home are alive, exactly and at once: each holds an
//! exclusive `flock` on `$HERMES_HOME/instances/<id>.lock` for its whole
//! life, and the kernel lets go of it the moment the process ends, however
//! it ends (kill -9 included).
//!
//! Consumer leases expire by time because, in general, an instance cannot
//! tell whether another one on another machine died. Gateways that share a
//! home are on one machine, so a lease whose holder's lock is free belongs
//! to a process that is gone: it is taken over at once instead of after its
//! expiry. A gateway restarted after a crash therefore reads its bots again
//! at once, as before leases existed. The same lock refuses a second gateway
//! with the same instance id on the same home, which would otherwise renew
//! the other's leases as its own and read every bot twice.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The folder of the lock files, under the home.
const DIR: &str = "instances";
/// An unheld lock file older than this is removed when a gateway starts
/// (default ids carry the pid, so every start makes a new one). Younger
/// ones stay: they tell a restarted gateway that a crashed one is gone.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// This process's claim on its instance id; the lock is held while it lives.
#[derive(Debug)]
pub struct Liveness {
    dir: PathBuf,
    _lock: File,
}

/// Why the instance id could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another gateway with the instance id {0:?} runs on this home; give each its own \
         storage.instance_id (HERMES_INSTANCE_ID)"
    )]
    Taken(String),
    #[error("cannot create the instance lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file of an instance id: its characters outside `[A-Za-z0-9._-]`
/// become `_`, so any id names a file inside the folder.
fn file_name(instance: &str) -> String {
    let safe: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.lock", safe.trim_start_matches('.'))
}

/// Takes an exclusive lock on `file` without waiting; `false` when another
/// open file holds it.
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this `File` owns for the whole call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Liveness {
    /// Claims `instance` on the home at `home` for the life of the returned
    /// value (of the process, in the gateway).
    pub fn claim(home: &Path, instance: &str) -> Result<Self, ClaimError> {
        let dir = home.join(DIR);
        let path = dir.join(file_name(instance));
        let io = |source| ClaimError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if !try_lock(&lock) {
            return Err(ClaimError::Taken(instance.to_string()));
        }
        remove_stale(&dir, &path, STALE_AFTER);
        Ok(Self { dir, _lock: lock })
    }

    /// Whether the gateway `instance` on this home is certainly alive: its
    /// lock file exists and is held.
    pub fn is_alive(&self, instance: &str) -> bool {
        File::open(self.dir.join(file_name(instance))).is_ok_and(|file| !try_lock(&file))
    }

    /// Whether the gateway `instance` on this home has certainly ended: its
    /// lock file exists and nobody holds it. `false` when that cannot be
    /// told (no such file: another machine's instance, or one from before
    /// these locks).
    pub fn is_gone(&self, instance: &str) -> bool {
        let Ok(file) = File::open(self.dir.join(file_name(instance))) else {
            return false;
        };
        // The lock goes with `file` when it is dropped here.
        try_lock(&file)
    }
}

/// Removes the lock files in `dir` (but `mine`) that nobody holds and that
/// are older than `age`. Best effort: what cannot be read or removed stays.
fn remove_stale(dir: &Path, mine: &Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        if path == mine || !old || path.extension().is_none_or(|e| e != "lock") {
            continue;
        }
        if File::open(&path).is_ok_and(|f| try_lock(&f)) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_instance_is_seen_and_an_ended_one_is_gone() {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = Liveness::claim(home.path(), "host-1").unwrap_or_else(|e| panic!("{e}"));
        let b = Liveness::claim(home.path(), "host-2").unwrap_or_else(|e| panic!("{e}"));
        // flock is per open file: the same process sees its own other claims.
        assert!(!b.is_gone("host-1") && b.is_alive("host-1"));
        assert!(!a.is_gone("host-2") && a.is_alive("host-2"));
        // An id with no lock file cannot be judged: neither gone nor alive.
        assert!(!a.is_gone("elsewhere-7") && !a.is_alive("elsewhere-7"));
        // The same id twice on one home is refused.
        let twice = Liveness::claim(home.path(), "host-1");
        assert!(matches!(twice, Err(ClaimError::Taken(_))), "{twice:?}");
        drop(a);
        assert!(b.is_gone("host-1") && !b.is_alive("host-1"));
        // Checking did not take the id: it can be claimed again.
        assert!(Liveness::claim(home.path(), "host-1").is_ok());
    }

    #[test]
    fn old_unheld_lock_files_are_removed_and_held_or_young_ones_kept() {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let held = Liveness::claim(home.path(), "alive").unwrap_or_else(|e| panic!("{e}"));
        drop(Liveness::claim(home.path(), "gone").unwrap_or_else(|e| panic!("{e}")));
        let dir = home.path().join(DIR);
        let mine = dir.join(file_name("me"));
        // Young: nothing goes (a restart still needs to see "gone" is gone).
        remove_stale(&dir, &mine, STALE_AFTER);
        assert!(held.is_gone("gone"));
        // Old enough: the unheld one goes, the held one stays.
        remove_stale(&dir, &mine, std::time::Duration::ZERO);
        assert!(!dir.join(file_name("gone")).exists());
        assert!(dir.join(file_name("alive")).exists() && held.is_alive("alive"));
    }

    #[test]
    fn any_id_names_a_file_in_the_folder() {
        assert_eq!(file_name("gw-1.example_a"), "gw-1.example_a.lock");
        assert_eq!(file_name("../../etc/passwd"), "_.._etc_passwd.lock");
        assert_eq!(file_name("a b/c"), "a_b_c.lock");
    }
}
