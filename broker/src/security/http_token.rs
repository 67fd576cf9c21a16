//! `HTTP_AUTH_TOKEN_FILE`: the bearer token `/metrics` requires (the probes
//! `/healthz` and `/ready` stay open for the kubelet). The file holds the token
//! itself (one line); only its SHA-256 is kept, and requests are compared in
//! constant time. Reloaded with the rest.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::env;

/// Longest HTTP token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The HTTP bearer token.
#[derive(Debug)]
pub struct HttpToken {
    path: PathBuf,
    hash: RwLock<[u8; 32]>,
}

/// Why the token file was not accepted.
#[derive(Debug, thiserror::Error)]
#[error("{} ({path}): {message}", env::HTTP_AUTH_TOKEN_FILE)]
pub struct HttpTokenError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn read(path: &Path) -> Result<[u8; 32], HttpTokenError> {
    let fail = |message: String| HttpTokenError {
        path: path.display().to_string(),
        message,
    };
    let metadata = std::fs::metadata(path).map_err(|error| fail(error.to_string()))?;
    if metadata.len() > MAX_TOKEN_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_TOKEN_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|error| fail(error.to_string()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(fail("the token must be at least 16 characters".into()));
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

impl HttpToken {
    /// Reads the token file.
    pub fn load(path: &Path) -> Result<HttpToken, HttpTokenError> {
        Ok(HttpToken {
            path: path.to_owned(),
            hash: RwLock::new(read(path)?),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; on error the current token stays. `Ok(true)` if it changed.
    pub fn reload(&self) -> Result<bool, HttpTokenError> {
        let hash = read(&self.path)?;
        let mut current = self
            .hash
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let changed = !bool::from(current.ct_eq(&hash));
        *current = hash;
        Ok(changed)
    }

    /// Does an `Authorization` header value carry the token (`Bearer <token>`)?
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(token) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(token).into();
        let current = self
            .hash
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        bool::from(current.ct_eq(&hash))
    }
}
