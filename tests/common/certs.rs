//! Real certificates for TLS tests, made with rcgen: one CA per test directory
//! (regenerating the CA per node made other harnesses fail with BadSignature),
//! server and client certificates signed by it, written as PEM files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority and the directory its files are written to.
pub struct Pki {
    pub dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM), for clients' and the broker's trust.
    pub ca_file: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA called `name`, writing into `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).expect("write CA");
        Pki {
            dir: dir.to_owned(),
            issuer,
            ca_file,
        }
    }

    fn issue(
        &self,
        file: &str,
        common_name: &str,
        names: &[&str],
        server: bool,
        expired: bool,
    ) -> Issued {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&issued.cert, certificate.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, file: &str) -> Issued {
        self.issue(
            file,
            "tern test server",
            &["localhost", "127.0.0.1"],
            true,
            false,
        )
    }

    /// A server certificate for other names only.
    pub fn server_for(&self, file: &str, names: &[&str]) -> Issued {
        self.issue(file, "tern other server", names, true, false)
    }

    /// A server certificate for localhost that expired in 2021.
    pub fn expired_server(&self, file: &str) -> Issued {
        self.issue(
            file,
            "tern expired server",
            &["localhost", "127.0.0.1"],
            true,
            true,
        )
    }

    /// A client certificate whose subject CN is `common_name`.
    pub fn client(&self, file: &str, common_name: &str) -> Issued {
        self.issue(file, common_name, &[], false, false)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, file: &str, common_name: &str) -> Issued {
        self.issue(file, common_name, &[], false, true)
    }
}
