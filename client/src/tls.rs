//! TLS for the SDK ([`TlsOptions`]): which CAs to trust (a PEM file, else the
//! system's roots), an optional client certificate for brokers that require
//! mutual TLS, and the name the broker's certificate must carry. TLS 1.2 and 1.3
//! only (rustls, ring).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;

/// How the client speaks TLS to the broker.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) that sign the broker's certificate; `None`: the
    /// system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry; `None`: the host of the
    /// address dialled.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Trusts the CAs in `ca_file` (PEM).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents `cert_file` with `key_file` (PEM) to brokers that require client
    /// certificates.
    pub fn client_certificate(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// Expects the broker's certificate to name `name`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    fn config(&self) -> Result<ClientConfig, ClientError> {
        let fail = |message: String| ClientError::Tls { message };
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for certificate in CertificateDer::pem_file_iter(path)
                    .map_err(|error| fail(format!("CA file {}: {error}", path.display())))?
                {
                    let certificate = certificate
                        .map_err(|error| fail(format!("CA file {}: {error}", path.display())))?;
                    roots
                        .add(certificate)
                        .map_err(|error| fail(format!("CA file {}: {error}", path.display())))?;
                }
            }
            None => {
                for certificate in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(certificate);
                }
            }
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|error| fail(error.to_string()))?
                .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|error| fail(format!("certificate {}: {error}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|error| fail(format!("key {}: {error}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| fail(error.to_string()))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(fail(
                "a client certificate needs both its certificate and its key file".into(),
            )),
        }
    }

    /// Runs the TLS handshake over `stream`, dialled at `address` (the SDK does
    /// this itself; public for other protocols to the broker, such as `tern health`
    /// over HTTPS).
    pub async fn connect(
        &self,
        address: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, ClientError> {
        let connector = TlsConnector::from(Arc::new(self.config()?));
        let host = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(address).to_owned(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| ClientError::Tls {
            message: format!("{host:?} is not a valid server name"),
        })?;
        connector
            .connect(name, stream)
            .await
            .map_err(|error| ClientError::Tls {
                message: format!("TLS handshake with {address} failed: {error}"),
            })
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:9080"), "localhost");
        assert_eq!(host_of("[::1]:9080"), "::1");
        assert_eq!(host_of("broker"), "broker");
    }
}
