//! Security: TLS on the listeners, token and certificate authentication, and
//! per-subject permissions, all reloadable without a restart.
//!
//! - [`tls`] — the rustls server configuration (`TLS_CERT_FILE`, `TLS_KEY_FILE`,
//!   `TLS_CLIENT_CA_FILE`), swapped on reload; client certificate names;
//! - [`auth_file`] — `AUTH_FILE`: users, credentials (token hashes, certificate
//!   identities) and permissions;
//! - [`permissions`] — subject rules (allow, deny, deny wins) and queue rights;
//! - [`authenticator`] — authentication at HELLO, delayed and throttled failures;
//! - [`http_token`] — `HTTP_AUTH_TOKEN_FILE`, the bearer token of `/metrics`;
//! - [`stats`] — `tern_auth_*`, `tern_tls_*`, `tern_security_reloads_total`.
//!
//! Reload: [`Security::reload`] reads every configured file again (on SIGHUP, and
//! when [`Security::watch_files`] sees one change). A file that does not load is
//! logged and the configuration before it stays. New TLS handshakes get the new
//! certificate while established sessions keep theirs; a new auth file applies to
//! every open connection at once (see `session/access.rs`).

pub mod auth_file;
pub mod authenticator;
pub mod http_token;
pub mod permissions;
pub mod stats;
pub mod tls;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use auth_file::{AuthFileError, AuthTable, Credential, User};
pub use authenticator::{Auth, Authenticated};
pub use http_token::HttpToken;
pub use permissions::{Permissions, SubjectRules};
pub use stats::{AuthFailure, DeniedAction, SecurityStats};
pub use tls::{TlsCell, TlsError, TlsFiles};

use crate::config::{env, Config};

/// How often the configured files are checked for changes.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why the security settings could not be loaded at startup. Names the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// Settings that only make sense together.
    #[error("{setting}: {message}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What is missing.
        message: String,
    },
    /// A TLS file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The auth file.
    #[error("AUTH_FILE: {0}")]
    Auth(#[from] AuthFileError),
    /// The HTTP token file.
    #[error(transparent)]
    HttpToken(#[from] http_token::HttpTokenError),
}

/// The broker's security configuration.
#[derive(Debug, Default)]
pub struct Security {
    tls: Option<TlsCell>,
    http_tls: bool,
    auth: Option<Auth>,
    http_token: Option<HttpToken>,
    stats: SecurityStats,
}

impl Security {
    /// No TLS, no authentication: every client may do everything.
    pub fn open() -> Security {
        Security::default()
    }

    /// Loads what `config` names; an error names the setting.
    pub fn from_config(config: &Config) -> Result<Security, SecurityError> {
        let tls = match (&config.tls_cert_file.0, &config.tls_key_file.0) {
            (Some(cert), Some(key)) => Some(TlsCell::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca_file.0.clone(),
            })?),
            (Some(_), None) => return Err(missing(env::TLS_KEY_FILE, env::TLS_CERT_FILE)),
            (None, Some(_)) => return Err(missing(env::TLS_CERT_FILE, env::TLS_KEY_FILE)),
            (None, None) => None,
        };
        if tls.is_none() && config.tls_client_ca_file.0.is_some() {
            return Err(missing(env::TLS_CERT_FILE, env::TLS_CLIENT_CA_FILE));
        }
        if tls.is_none() && config.http_tls {
            return Err(missing(env::TLS_CERT_FILE, env::HTTP_TLS));
        }
        let auth = config.auth_file.0.as_deref().map(Auth::load).transpose()?;
        let http_token = config
            .http_auth_token_file
            .0
            .as_deref()
            .map(HttpToken::load)
            .transpose()?;
        Ok(Security {
            tls,
            http_tls: config.http_tls,
            auth,
            http_token,
            stats: SecurityStats::default(),
        })
    }

    /// TLS of the protocol listener, when configured.
    pub fn tls(&self) -> Option<&TlsCell> {
        self.tls.as_ref()
    }

    /// TLS of the HTTP listener (`HTTP_TLS`), when configured.
    pub fn http_tls(&self) -> Option<&TlsCell> {
        self.tls.as_ref().filter(|_| self.http_tls)
    }

    /// Authentication and permissions, when `AUTH_FILE` is set.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The bearer token `/metrics` requires, when `HTTP_AUTH_TOKEN_FILE` is set.
    pub fn http_token(&self) -> Option<&HttpToken> {
        self.http_token.as_ref()
    }

    /// The security counters.
    pub fn stats(&self) -> &SecurityStats {
        &self.stats
    }

    /// Reads every configured file again and applies what loads; logs each
    /// outcome. Returns how many parts failed to load. `invalidate` runs once the
    /// new files are in force, before sessions learn of a new auth file (the broker
    /// drops every route cache there, and the permission decisions in them).
    pub fn reload(&self, invalidate: impl Fn()) -> usize {
        let outcomes = [
            self.tls.as_ref().map(|tls| {
                let result = tls
                    .reload()
                    .map(|()| true)
                    .map_err(|error| error.to_string());
                ("TLS certificate", tls.files().cert.as_path(), result)
            }),
            self.auth.as_ref().map(|auth| {
                let result = auth.reload(&invalidate).map_err(|error| error.to_string());
                ("auth file", auth.path(), result)
            }),
            self.http_token.as_ref().map(|token| {
                let result = token.reload().map_err(|error| error.to_string());
                ("HTTP token", token.path(), result)
            }),
        ];
        let mut failed = 0;
        for (what, file, result) in outcomes.into_iter().flatten() {
            match result {
                Ok(true) => {
                    self.stats.reloads_applied.inc();
                    info!(file = %file.display(), "{what} reloaded");
                }
                Ok(false) => {}
                Err(error) => {
                    failed += 1;
                    self.stats.reloads_failed.inc();
                    warn!(%error, "{what} reload failed; the previous one stays in use");
                }
            }
        }
        failed
    }

    fn watched_paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(tls) = &self.tls {
            paths.extend(tls.files().paths());
        }
        if let Some(auth) = &self.auth {
            paths.push(auth.path().to_owned());
        }
        if let Some(token) = &self.http_token {
            paths.push(token.path().to_owned());
        }
        paths
    }

    /// Checks the configured files every [`RELOAD_POLL_INTERVAL`] and reloads when
    /// one changed (its target, size or modification time: a Kubernetes secret
    /// update swaps a symlink), until `stop`.
    /// `invalidate` is [`Security::reload`]'s.
    pub async fn watch_files(&self, stop: CancellationToken, invalidate: impl Fn()) {
        let paths = self.watched_paths();
        if paths.is_empty() {
            return;
        }
        let mut seen = fingerprints(&paths);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_POLL_INTERVAL) => {}
            }
            let now = fingerprints(&paths);
            if now != seen {
                seen = now;
                info!("a security file changed; reloading");
                self.reload(&invalidate);
            }
        }
    }
}

fn missing(needed: &'static str, because: &'static str) -> SecurityError {
    SecurityError::Setting {
        setting: needed,
        message: format!("must be set when {because} is"),
    }
}

type Fingerprint = Option<(PathBuf, u64, SystemTime)>;

fn fingerprints(paths: &[PathBuf]) -> Vec<Fingerprint> {
    paths
        .iter()
        .map(|path| {
            let target = std::fs::canonicalize(path).ok()?;
            let metadata = std::fs::metadata(&target).ok()?;
            Some((target, metadata.len(), metadata.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn user(name: &str) -> String {
        format!("[[users]]\nname = \"{name}\"\ncert_identity = \"{name}\"\n")
    }

    /// A changed file is picked up by the watcher within one poll (paused time: the
    /// poll interval passes without waiting), and an unchanged one is not reloaded.
    #[tokio::test(start_paused = true)]
    async fn the_watcher_reloads_a_changed_auth_file() {
        let dir = std::env::temp_dir().join(format!("tern-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("auth.toml");
        std::fs::write(&file, user("first")).expect("write");
        let config = Config {
            auth_file: crate::config::OptionalPath(Some(file.clone())),
            ..Config::default()
        };
        let security = Arc::new(Security::from_config(&config).expect("loads"));
        let reloads = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let watcher = {
            let (security, reloads, stop) = (security.clone(), reloads.clone(), stop.clone());
            tokio::spawn(async move {
                security
                    .watch_files(stop, || {
                        reloads.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            })
        };
        tokio::time::sleep(RELOAD_POLL_INTERVAL * 3).await;
        assert_eq!(reloads.load(Ordering::SeqCst), 0, "nothing changed");
        std::fs::write(&file, format!("{}{}", user("first"), user("second"))).expect("rewrite");
        tokio::time::sleep(RELOAD_POLL_INTERVAL + Duration::from_millis(100)).await;
        assert_eq!(reloads.load(Ordering::SeqCst), 1);
        let table = security.auth().expect("auth").table();
        assert!(table.user("second").is_some());
        stop.cancel();
        watcher.await.expect("watcher stops");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn settings_that_need_each_other_are_named() {
        let config = Config {
            http_tls: true,
            ..Config::default()
        };
        let error = Security::from_config(&config).expect_err("no certificate");
        assert!(error.to_string().contains("TLS_CERT_FILE"), "{error}");
        let config = Config {
            tls_client_ca_file: crate::config::OptionalPath(Some("/ca.pem".into())),
            ..Config::default()
        };
        let error = Security::from_config(&config).expect_err("no certificate");
        assert!(error.to_string().contains("TLS_CLIENT_CA_FILE"), "{error}");
        let config = Config {
            auth_file: crate::config::OptionalPath(Some("/nonexistent/auth.toml".into())),
            ..Config::default()
        };
        let error = Security::from_config(&config).expect_err("missing file");
        assert!(error.to_string().contains("AUTH_FILE"), "{error}");
    }
}
