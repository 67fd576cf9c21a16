//! Authentication at HELLO against the current auth file, and its reload.
//!
//! A failed attempt is answered only after [`AUTH_FAILURE_DELAY`], and an address
//! with [`MAX_PENDING_FAILURES_PER_PEER`] failed attempts already waiting out their
//! delay is refused at once without its credential being looked at: a client
//! guesses at most that many tokens per delay per address. Tokens are compared as
//! SHA-256 hashes in constant time ([`AuthTable::authenticate`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::auth_file::{AuthFileError, AuthTable, Credential, User};
use super::stats::AuthFailure;

/// How long a failed authentication waits before it is answered.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failed attempts from one address that may wait out their delay at once.
pub const MAX_PENDING_FAILURES_PER_PEER: u32 = 4;

/// Who a connection authenticated as.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user.
    pub user: Arc<User>,
    /// The credential it used (a reload that takes it away disconnects it).
    pub credential: Credential,
}

/// The auth file, loaded, and the state of failed attempts.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    table: RwLock<Arc<AuthTable>>,
    /// Bumped on every applied reload; sessions watch it.
    changes: watch::Sender<u64>,
    /// Failed attempts waiting out their delay, per peer address (entries exist
    /// only while some wait, so this is bounded by the open connections).
    pending_failures: Mutex<HashMap<IpAddr, u32>>,
}

impl Auth {
    /// Loads the auth file at `path`.
    pub fn load(path: &Path) -> Result<Auth, AuthFileError> {
        let table = AuthTable::load(path)?;
        Ok(Auth {
            path: path.to_owned(),
            table: RwLock::new(Arc::new(table)),
            changes: watch::Sender::new(0),
            pending_failures: Mutex::new(HashMap::new()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current table.
    pub fn table(&self) -> Arc<AuthTable> {
        self.table
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Tells a session when the table changes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reads the file again: `Ok(true)` when it changed and was applied, `Ok(false)`
    /// when it is the same; on error the current table stays. `before_sessions_learn`
    /// runs after the new table is in place and before sessions are told (the
    /// broker drops every cached permission decision there).
    pub fn reload(&self, before_sessions_learn: impl FnOnce()) -> Result<bool, AuthFileError> {
        let table = AuthTable::load(&self.path)?;
        let mut current = self
            .table
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if **current == table {
            return Ok(false);
        }
        *current = Arc::new(table);
        drop(current);
        before_sessions_learn();
        self.changes.send_modify(|generation| *generation += 1);
        Ok(true)
    }

    /// Authenticates a HELLO's token (or a certificate's names) from `peer`:
    /// immediately on success, after [`AUTH_FAILURE_DELAY`] on failure.
    pub async fn authenticate(
        &self,
        peer: IpAddr,
        token: &str,
        certificate_names: &[Box<str>],
    ) -> Result<Authenticated, AuthFailure> {
        if self.pending(peer) >= MAX_PENDING_FAILURES_PER_PEER {
            return Err(AuthFailure::Throttled);
        }
        if let Some((user, credential)) = self.table().authenticate(token, certificate_names) {
            return Ok(Authenticated { user, credential });
        }
        let reason = if token.is_empty() && certificate_names.is_empty() {
            AuthFailure::Missing
        } else {
            AuthFailure::Wrong
        };
        // Counted while it waits, and uncounted however the wait ends.
        let _waiting = PendingFailure::begin(self, peer);
        tokio::time::sleep(AUTH_FAILURE_DELAY).await;
        Err(reason)
    }

    fn pending(&self, peer: IpAddr) -> u32 {
        let pending = self
            .pending_failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        pending.get(&peer).copied().unwrap_or(0)
    }

    fn change_pending(&self, peer: IpAddr, begin: bool) {
        let mut pending = self
            .pending_failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = pending.entry(peer).or_insert(0);
        if begin {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                pending.remove(&peer);
            }
        }
    }
}

/// One failed attempt waiting out its delay; uncounted when dropped.
struct PendingFailure<'a> {
    auth: &'a Auth,
    peer: IpAddr,
}

impl<'a> PendingFailure<'a> {
    fn begin(auth: &'a Auth, peer: IpAddr) -> PendingFailure<'a> {
        auth.change_pending(peer, true);
        PendingFailure { auth, peer }
    }
}

impl Drop for PendingFailure<'_> {
    fn drop(&mut self) {
        self.auth.change_pending(self.peer, false);
    }
}
