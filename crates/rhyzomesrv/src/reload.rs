//! Configuration reload on SIGHUP (`systemctl reload rhyzomesrv`).
//!
//! What changes live:
//! - the create rate limit (`CreateRateLimit`, `CreateBurst`), applied from the next request;
//! - tokens need no reload at all: every request reads them from the store, so a token
//!   created or revoked with `rhyzomesrv token` counts at the next request.
//!
//! Everything else (listeners, TLS, libvirt connection, state directory, timeouts, the
//! reconciler's timings) is wired in at start-up; a changed value is named in the log as
//! needing a restart, and the running value stays. A file that does not parse changes
//! nothing and is logged as an error. One task handles the signals, one reload at a time.

use crate::config::{Config, ConfigError};
use crate::http::auth::Authenticator;
use std::path::PathBuf;
use std::sync::Arc;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose new value now applies.
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reads `path`, applies what can change live to `auth`, and updates `running` to the values
/// now in force (so that a second reload compares against them).
pub fn reload(
    path: &std::path::Path,
    running: &mut Config,
    auth: &Authenticator,
) -> Result<ReloadReport, ConfigError> {
    let new = Config::load(path, true)?;
    let mut report = ReloadReport::default();
    if new.create_rate_limit != running.create_rate_limit
        || new.create_burst != running.create_burst
    {
        auth.set_create_limit(new.create_rate_limit, new.create_burst);
        running.create_rate_limit = new.create_rate_limit;
        running.create_burst = new.create_burst;
        report.applied.extend(["CreateRateLimit", "CreateBurst"]);
    }
    report.needs_restart = restart_only_changes(running, &new);
    Ok(report)
}

/// The keys, other than the live ones, whose values differ between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    // Compared through their Debug form: Config holds paths, durations, enums and options
    // of them, whose Debug output is equal exactly when the values are.
    macro_rules! differing {
        ($($field:ident => $key:literal),* $(,)?) => {{
            let mut keys = Vec::new();
            $(if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                keys.push($key);
            })*
            keys
        }};
    }
    differing!(
        bridge_interface => "BridgeInterface",
        hostname => "Hostname",
        bind_addr => "Bind",
        libvirt_uri => "LibvirtURI",
        hosts => "Hosts",
        failover_after => "FailoverAfterSeconds",
        domain_type => "DomainType",
        state_dir => "StateDir",
        kernel_dirs => "KernelDirs",
        reconcile_interval => "ReconcileIntervalSeconds",
        restart_backoff => "RestartBackoffMs",
        restart_backoff_max => "RestartBackoffMaxMs",
        restart_stable => "RestartStableSeconds",
        stop_guests_on_shutdown => "StopGuestsOnShutdown",
        max_image_bytes => "MaxImageBytes",
        tls => "TLSCert/TLSKey",
        insecure => "Insecure",
        header_timeout => "HeaderTimeoutSeconds",
        request_timeout => "RequestTimeoutSeconds",
        socket => "Socket/SocketGroup",
    )
}

/// Reloads `path` on every SIGHUP, from a task that runs until aborted. The handler is in
/// place when this returns, so a SIGHUP right after READY=1 is a reload, never the default
/// action (which ends the process).
pub fn watch_sighup(
    path: PathBuf,
    mut running: Config,
    auth: Arc<Authenticator>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = crate::systemd::notify("RELOADING=1");
            match reload(&path, &mut running, &auth) {
                Ok(report) => {
                    tracing::info!(
                        config = %path.display(),
                        applied = ?report.applied,
                        "configuration reloaded; tokens are read from the store at every request"
                    );
                    if !report.needs_restart.is_empty() {
                        tracing::warn!(
                            keys = ?report.needs_restart,
                            "these settings changed but apply only after a restart; the running values stay"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload failed; nothing changed")
                }
            }
            let _ = crate::systemd::notify("READY=1");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_apply_and_other_changes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rhyzome.conf");
        let auth = Authenticator::disabled();
        std::fs::write(&path, r#"{"CreateRateLimit": 5, "CreateBurst": 7}"#).unwrap();
        let mut running = Config::load(&path, true).unwrap();

        std::fs::write(
            &path,
            r#"{"CreateRateLimit": 1, "CreateBurst": 2, "Bind": "127.0.0.1:9999"}"#,
        )
        .unwrap();
        let report = reload(&path, &mut running, &auth).unwrap();
        assert_eq!(report.applied, ["CreateRateLimit", "CreateBurst"]);
        assert_eq!(report.needs_restart, ["Bind"]);
        assert_eq!((running.create_rate_limit, running.create_burst), (1.0, 2));
        assert_eq!(running.bind_addr, "127.0.0.1:8080".parse().unwrap());

        // Nothing new: nothing applied, and the pending restart is still named.
        let again = reload(&path, &mut running, &auth).unwrap();
        assert!(again.applied.is_empty());
        assert_eq!(again.needs_restart, ["Bind"]);
    }

    #[test]
    fn a_broken_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rhyzome.conf");
        std::fs::write(&path, r#"{"CreateRateLimit": 5}"#).unwrap();
        let mut running = Config::load(&path, true).unwrap();
        std::fs::write(&path, r#"{"CreateRateLimit": 1,"#).unwrap();
        assert!(reload(&path, &mut running, &Authenticator::disabled()).is_err());
        assert_eq!(running.create_rate_limit, 5.0);
    }
}
