//! `AUTH_FILE`: the users, their credentials and their permissions, in TOML.
//!
//! ```toml
//! [[users]]
//! name = "orders-service"
//! token_sha256 = "<64 hex digits: SHA-256 of the token>"
//! cert_identity = "orders.prod.svc"      # optional: a client certificate's CN or SAN
//! publish   = { allow = ["orders.>"], deny = ["orders.internal.>"] }
//! subscribe = { allow = ["_INBOX.>", "billing.*"] }
//! consume   = ["billing"]
//! declare   = ["billing"]
//! allow_responses = true
//! ```
//!
//! Tokens are stored only as hashes (`tern auth token` makes a token and its
//! line). Unknown keys are errors that name them; so are duplicate names, tokens or
//! certificate identities, and a user with no credential.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::permissions::{Permissions, RuleError, SubjectRules};

/// Most users one file may hold.
pub const MAX_USERS: usize = 10_000;
/// Largest auth file read, in bytes.
pub const MAX_AUTH_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    users: Vec<UserSchema>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSchema {
    name: String,
    token_sha256: Option<String>,
    cert_identity: Option<String>,
    publish: Option<RulesSchema>,
    subscribe: Option<RulesSchema>,
    #[serde(default)]
    consume: Vec<String>,
    #[serde(default)]
    declare: Vec<String>,
    #[serde(default)]
    allow_responses: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesSchema {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// How a connection proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token whose SHA-256 is this.
    Token([u8; 32]),
    /// A verified client certificate with this CN or SAN.
    Certificate(Box<str>),
}

/// One user of the auth file.
#[derive(Debug, PartialEq, Eq)]
pub struct User {
    /// Its name (logs, errors, the connection list).
    pub name: Box<str>,
    token_sha256: Option<[u8; 32]>,
    cert_identity: Option<Box<str>>,
    /// What it may do.
    pub permissions: Arc<Permissions>,
}

impl User {
    /// Does this user still hold `credential`?
    pub fn holds(&self, credential: &Credential) -> bool {
        match credential {
            Credential::Token(hash) => self
                .token_sha256
                .is_some_and(|own| bool::from(own.ct_eq(hash))),
            Credential::Certificate(identity) => self.cert_identity.as_ref() == Some(identity),
        }
    }
}

/// The parsed auth file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuthTable {
    users: Vec<Arc<User>>,
}

/// Why an auth file was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFileError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_AUTH_FILE_BYTES`].
    #[error("{path} is larger than {MAX_AUTH_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// It is not valid TOML of the documented form (names the key or line).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message (line, column, what was expected).
        message: String,
    },
    /// A user entry is wrong.
    #[error("{path}: user {user:?}: {message}")]
    User {
        /// The file.
        path: String,
        /// The user's name.
        user: String,
        /// What is wrong.
        message: String,
    },
}

impl AuthTable {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<AuthTable, AuthFileError> {
        let shown = path.display().to_string();
        let metadata = std::fs::metadata(path).map_err(|source| AuthFileError::Read {
            path: shown.clone(),
            source,
        })?;
        if metadata.len() > MAX_AUTH_FILE_BYTES {
            return Err(AuthFileError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: shown.clone(),
            source,
        })?;
        AuthTable::parse(&text, &shown)
    }

    /// Parses the text of an auth file (`path` is for messages).
    pub fn parse(text: &str, path: &str) -> Result<AuthTable, AuthFileError> {
        let schema: FileSchema = toml::from_str(text).map_err(|error| AuthFileError::Syntax {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        if schema.users.len() > MAX_USERS {
            return Err(AuthFileError::Syntax {
                path: path.to_owned(),
                message: format!("more than {MAX_USERS} users"),
            });
        }
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        let mut identities = HashSet::new();
        let mut users = Vec::with_capacity(schema.users.len());
        for user in schema.users {
            let fail = |message: String| AuthFileError::User {
                path: path.to_owned(),
                user: user.name.clone(),
                message,
            };
            if user.name.is_empty() {
                return Err(fail("the name is empty".into()));
            }
            if !names.insert(user.name.clone()) {
                return Err(fail("the name is used twice".into()));
            }
            let token_sha256 = match &user.token_sha256 {
                None => None,
                Some(hex_digest) => {
                    let mut hash = [0u8; 32];
                    hex::decode_to_slice(hex_digest, &mut hash).map_err(|_| {
                        fail(
                            "token_sha256 must be 64 hexadecimal digits (see `tern auth token`)"
                                .into(),
                        )
                    })?;
                    if !tokens.insert(hash) {
                        return Err(fail("its token_sha256 is another user's too".into()));
                    }
                    Some(hash)
                }
            };
            let cert_identity = user.cert_identity.clone().map(String::into_boxed_str);
            if let Some(identity) = &cert_identity {
                if identity.is_empty() || !identities.insert(identity.clone()) {
                    return Err(fail("cert_identity is empty or another user's too".into()));
                }
            }
            if token_sha256.is_none() && cert_identity.is_none() {
                return Err(fail(
                    "has no credential: give token_sha256, cert_identity or both".into(),
                ));
            }
            let rules = |schema: Option<RulesSchema>| match schema {
                None => Ok(SubjectRules::default()),
                Some(RulesSchema { allow, deny }) => SubjectRules::new(allow, deny),
            };
            let describe = |error: RuleError| fail(error.to_string());
            let permissions = Permissions {
                publish: rules(user.publish).map_err(describe)?,
                subscribe: rules(user.subscribe).map_err(describe)?,
                consume: SubjectRules::new(user.consume, Vec::new()).map_err(describe)?,
                declare: SubjectRules::new(user.declare, Vec::new()).map_err(describe)?,
                allow_responses: user.allow_responses,
            };
            users.push(Arc::new(User {
                name: user.name.into_boxed_str(),
                token_sha256,
                cert_identity,
                permissions: Arc::new(permissions),
            }));
        }
        Ok(AuthTable { users })
    }

    /// The user a token or a certificate identifies, and the credential it used.
    /// A non-empty token decides (its hash is compared with every user's in
    /// constant time, without stopping at a match); without one, the first of the
    /// certificate's names that maps to a user.
    pub fn authenticate(
        &self,
        token: &str,
        certificate_names: &[Box<str>],
    ) -> Option<(Arc<User>, Credential)> {
        if !token.is_empty() {
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let mut found = None;
            for user in &self.users {
                let matched = user
                    .token_sha256
                    .map_or(subtle::Choice::from(0), |own| own.ct_eq(&hash));
                if bool::from(matched) {
                    found = Some(user.clone());
                }
            }
            return found.map(|user| (user, Credential::Token(hash)));
        }
        certificate_names.iter().find_map(|name| {
            self.users
                .iter()
                .find(|user| user.cert_identity.as_deref() == Some(&**name))
                .map(|user| (user.clone(), Credential::Certificate(name.clone())))
        })
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.users.iter().find(|user| &*user.name == name)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users at all (every connection is refused).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A fresh token (32 random bytes, hex) and its `token_sha256` line.
pub fn generate_token() -> std::io::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = hex::encode(bytes);
    let line = format!(
        "token_sha256 = \"{}\"",
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    Ok((token, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn the_documented_form_parses_and_authenticates() {
        let text = format!(
            r#"
            [[users]]
            name = "orders-service"
            token_sha256 = "{}"
            publish   = {{ allow = ["orders.>"], deny = ["orders.internal.>"] }}
            subscribe = {{ allow = ["_INBOX.>", "billing.*"] }}
            consume   = ["billing"]
            allow_responses = true

            [[users]]
            name = "gateway"
            cert_identity = "gateway.prod"
            "#,
            hash("secret-1")
        );
        let table = AuthTable::parse(&text, "auth.toml").expect("valid");
        assert_eq!(table.len(), 2);
        let (user, credential) = table.authenticate("secret-1", &[]).expect("token");
        assert_eq!(&*user.name, "orders-service");
        assert!(user.holds(&credential));
        assert!(user.permissions.publish.permits_subject("orders.new"));
        assert!(user.permissions.allow_responses);
        assert!(table.authenticate("secret-2", &[]).is_none());
        // A token decides even with a certificate.
        assert!(table
            .authenticate("wrong", &["gateway.prod".into()])
            .is_none());
        let (user, _) = table
            .authenticate("", &["other".into(), "gateway.prod".into()])
            .expect("certificate");
        assert_eq!(&*user.name, "gateway");
        assert!(!user.permissions.publish.permits_subject("anything"));
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| {
            AuthTable::parse(text, "auth.toml")
                .expect_err("refused")
                .to_string()
        };
        let unknown = error("[[users]]\nname = \"a\"\ncert_identity = \"x\"\npublsh = {}\n");
        assert!(unknown.contains("publsh"), "{unknown}");
        let nested =
            error("[[users]]\nname = \"a\"\ncert_identity = \"x\"\npublish = { allw = [] }\n");
        assert!(nested.contains("allw"), "{nested}");
        let no_credential = error("[[users]]\nname = \"a\"\n");
        assert!(no_credential.contains("no credential"), "{no_credential}");
        let short = error("[[users]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n");
        assert!(short.contains("64 hexadecimal"), "{short}");
        let twice = error("[[users]]\nname = \"a\"\ncert_identity = \"x\"\n[[users]]\nname = \"a\"\ncert_identity = \"y\"\n");
        assert!(twice.contains("twice"), "{twice}");
        let bad_rule = error(
            "[[users]]\nname = \"a\"\ncert_identity = \"x\"\npublish = { allow = [\"a.>.b\"] }\n",
        );
        assert!(bad_rule.contains("a.>.b"), "{bad_rule}");
    }

    #[test]
    fn generated_tokens_match_their_line() {
        let (token, line) = generate_token().expect("random");
        assert_eq!(token.len(), 64);
        let text = format!("[[users]]\nname = \"t\"\n{line}\n");
        let table = AuthTable::parse(&text, "t").expect("valid");
        assert!(table.authenticate(&token, &[]).is_some());
    }
}
