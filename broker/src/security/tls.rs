//! TLS for the listeners (rustls, TLS 1.2 and 1.3 only): the server configuration
//! built from `TLS_CERT_FILE`, `TLS_KEY_FILE` and, for mutual TLS,
//! `TLS_CLIENT_CA_FILE`; a cell that swaps it on reload (new handshakes get the
//! new certificate, established sessions keep theirs); the names a verified client
//! certificate carries (its subject CN and SANs), which `AUTH_FILE` maps to users.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::env;

/// The files TLS is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `TLS_CERT_FILE`: the certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// `TLS_KEY_FILE`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `TLS_CLIENT_CA_FILE`: when set, clients must present a certificate signed by
    /// one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, for the change watcher.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }
}

/// Why a TLS configuration could not be built. Names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting} ({path}): {message}")]
pub struct TlsError {
    /// The setting whose file is wrong.
    pub setting: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl TlsError {
    fn new(setting: &'static str, path: &Path, message: impl ToString) -> TlsError {
        TlsError {
            setting,
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

/// The crypto provider (ring), installed per configuration rather than process-wide.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| TlsError::new(setting, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::new(setting, path, error))?;
    if certificates.is_empty() {
        return Err(TlsError::new(
            setting,
            path,
            "no PEM certificate in the file",
        ));
    }
    Ok(certificates)
}

/// Builds the server configuration from `files`. A certificate outside its
/// validity period is accepted with a warning (clients will refuse it); a file
/// that does not parse, or a key that does not match the certificate, is an error.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(env::TLS_CERT_FILE, &files.cert)?;
    if let Some(message) = validity_problem(&chain[0]) {
        tracing::warn!(file = %files.cert.display(), "{message}");
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| TlsError::new(env::TLS_KEY_FILE, &files.key, error))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError::new(env::TLS_CERT_FILE, &files.cert, error))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(env::TLS_CLIENT_CA_FILE, ca)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsError::new(env::TLS_CLIENT_CA_FILE, ca, error))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| TlsError::new(env::TLS_CLIENT_CA_FILE, ca, error))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::new(env::TLS_KEY_FILE, &files.key, error))?;
    Ok(Arc::new(config))
}

/// "expired", "not yet valid", or `None` for a certificate valid now.
fn validity_problem(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let validity = parsed.validity();
    if validity.is_valid() {
        return None;
    }
    Some(format!(
        "the certificate is outside its validity period ({} to {}); clients will refuse it",
        validity.not_before, validity.not_after
    ))
}

/// The current TLS configuration, swapped whole on reload.
#[derive(Debug)]
pub struct TlsCell {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsCell {
    /// Loads `files` (startup: an error stops the broker).
    pub fn load(files: TlsFiles) -> Result<TlsCell, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsCell {
            files,
            current: RwLock::new(config),
        })
    }

    /// The files it is configured from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// An acceptor with the current configuration (cheap: one `Arc` clone).
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// Loads the files again and swaps the configuration in; on error the current
    /// one stays and the error is returned (to be logged).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = config;
        Ok(())
    }
}

/// Most names taken from one client certificate.
const MAX_CERTIFICATE_NAMES: usize = 64;

/// The names a (verified) client certificate carries: each subject CN, then its
/// DNS, email and URI subject alternative names.
pub fn certificate_names(certificate: &CertificateDer<'_>) -> Vec<Box<str>> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<Box<str>> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(Into::into)
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(value)
                | GeneralName::RFC822Name(value)
                | GeneralName::URI(value) => names.push((*value).into()),
                _ => {}
            }
        }
    }
    names.truncate(MAX_CERTIFICATE_NAMES);
    names
}
