//! `hermes gateway install` / `uninstall`: the systemd unit.
//!
//! The unit runs this very binary (its absolute path) with the resolved
//! `HERMES_HOME`, as `Type=notify` with a watchdog, and reloads on SIGHUP.
//! `--print` writes the unit to stdout and touches nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit's file name.
pub const UNIT_NAME: &str = "hermes-gateway.service";
/// Where system units go.
const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// User unit or system unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    System,
}

/// The unit file's text.
pub fn unit_text(binary: &Path, home: &Path, scope: Scope, user: &str) -> String {
    let user_line = match scope {
        Scope::System => format!("User={user}\n"),
        Scope::User => String::new(),
    };
    let wanted_by = match scope {
        Scope::System => "multi-user.target",
        Scope::User => "default.target",
    };
    format!(
        "[Unit]
Description=Hermes gateway
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={bin} gateway
ExecReload=/bin/kill -HUP $MAINPID
Environment=HERMES_HOME={home}
{user_line}Restart=always
RestartSec=5
WatchdogSec=30
TimeoutStopSec=60
KillSignal=SIGTERM
# A tool's child killed for memory must not take the whole gateway down.
OOMPolicy=continue
# MemoryMax= is left to the operator: `systemctl edit hermes-gateway`.

[Install]
WantedBy={wanted_by}
",
        bin = binary.display(),
        home = home.display(),
    )
}

/// Where the unit file goes.
pub fn unit_path(scope: Scope, user_home: &Path, xdg_config: Option<&str>) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from(SYSTEM_UNIT_DIR).join(UNIT_NAME),
        Scope::User => {
            let base = xdg_config
                .map(PathBuf::from)
                .unwrap_or_else(|| user_home.join(".config"));
            base.join("systemd/user").join(UNIT_NAME)
        }
    }
}

fn systemctl(scope: Scope, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("systemctl");
    if scope == Scope::User {
        cmd.arg("--user");
    }
    cmd.args(args);
    let shown = format!(
        "systemctl {}{}",
        if scope == Scope::User { "--user " } else { "" },
        args.join(" ")
    );
    match cmd.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "`systemctl` was not found: this system does not run systemd. Run `hermes gateway` \
             under your own supervisor, or use `hermes gateway install --print` to see the unit"
                .to_string(),
        ),
        Err(e) => Err(format!("cannot run `{shown}`: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "`{shown}` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// Writes the unit, reloads systemd and enables the unit; returns the next steps.
pub fn install(unit: &str, path: &Path, scope: Scope) -> Result<String, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, unit).map_err(|e| {
        let hint = if scope == Scope::System {
            " (system units need root: try sudo)"
        } else {
            ""
        };
        format!("cannot write {}: {e}{hint}", path.display())
    })?;
    systemctl(scope, &["daemon-reload"])?;
    systemctl(scope, &["enable", UNIT_NAME])?;
    let (ctl, journal) = match scope {
        Scope::User => ("systemctl --user", "journalctl --user"),
        Scope::System => ("sudo systemctl", "journalctl"),
    };
    let mut next = format!(
        "Installed {}.\nNext:\n  {ctl} start hermes-gateway\n  {journal} -u hermes-gateway -f\n",
        path.display()
    );
    if scope == Scope::User {
        next.push_str(
            "  loginctl enable-linger $USER   # keep it running when you are logged out\n",
        );
    }
    Ok(next)
}

/// Disables and removes the unit.
pub fn uninstall(path: &Path, scope: Scope) -> Result<String, String> {
    if !path.exists() {
        return Err(format!(
            "{} is not installed ({} does not exist)",
            UNIT_NAME,
            path.display()
        ));
    }
    // Stopping may fail when the unit is not running; removal is what matters.
    if let Err(e) = systemctl(scope, &["disable", "--now", UNIT_NAME]) {
        log::warn!("{e}");
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    systemctl(scope, &["daemon-reload"])?;
    Ok(format!("Removed {}.\n", path.display()))
}

/// The user a system unit runs as: the one who ran `sudo`, else the current one.
pub fn invoking_user(env: &crate::config::Env) -> String {
    env.get("SUDO_USER")
        .or_else(|| env.get("USER"))
        .or_else(|| env.get("LOGNAME"))
        .map(String::from)
        .unwrap_or_else(|| "root".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths() {
        assert_eq!(
            unit_path(Scope::User, Path::new("/home/a"), None),
            PathBuf::from("/home/a/.config/systemd/user/hermes-gateway.service")
        );
        assert_eq!(
            unit_path(Scope::System, Path::new("/home/a"), None),
            PathBuf::from("/etc/systemd/system/hermes-gateway.service")
        );
    }
}
