//! Broker configuration: embedded defaults, overridden by environment variables,
//! overridden by `tern serve` flags.
//!
//! - [`settings`] — the one declaration of every setting (field, environment
//!   variable, flag, default, accepted range, help), from which [`Config`], the
//!   [`env`](mod@env) name constants, [`SETTINGS`] (for `--help`, `.env.example` and the
//!   README table) and the parsing and validation below all follow;
//! - [`values`] — what a setting accepts and how its text is parsed.
//!
//! The original service's variables (`TCP_PORT`, `HTTP_PORT`, `DELIVERY_MODE`,
//! `MAX_CONSUMERS`, `CONSUMER_CHANNEL_BUFFER_SIZE`) keep their names and defaults. A
//! value that does not parse, or is out of range, is a [`ConfigError`] naming the
//! variable (or flag) and what it accepts; the binary turns it into exit code 2. An
//! empty variable counts as unset, so `TCP_PORT=` in a manifest means "the default".

/// Declares every setting once; see `settings.rs`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $name:ident {
            flag: $flag:literal,
            default: $default:literal,
            value: $value_name:literal,
            accepts: $accepts:expr,
            help: $help:literal $(,)?
        }
    )*) => {
        /// The environment variable of every setting, as constants.
        pub mod env {
            $(
                #[doc = concat!("`", stringify!($name), "`: ", $help, ".")]
                pub const $name: &str = stringify!($name);
            )*
        }

        /// Every setting's declaration, by environment name.
        pub mod setting {
            #[allow(unused_imports)]
            use super::*;
            use $crate::config::Setting;
            $(
                #[doc = concat!("`", stringify!($name), "`: ", $help, ".")]
                pub const $name: Setting = Setting {
                    env: super::env::$name,
                    flag: $flag,
                    default: $default,
                    value_name: $value_name,
                    help: $help,
                    expected: || $crate::config::values::describe::<$ty, _>(&$accepts),
                };
            )*
        }

        /// Every setting, in the order `--help` and `.env.example` list them.
        pub const SETTINGS: &[super::Setting] = &[$(setting::$name),*];

        /// The complete, validated broker configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl Config {
            /// Resolves and validates every setting.
            pub(super) fn resolve(resolver: &super::Resolver<'_>) -> Result<Config, super::ConfigError> {
                Ok(Config {
                    $($field: resolver.get(&setting::$name, &$accepts)?,)*
                })
            }
        }
    };
}

pub mod settings;
pub mod values;

use std::collections::HashMap;

pub use settings::{env, setting, Config, SETTINGS};
use values::{Accepts, Rejected};
pub use values::{LogFormat, MemoryLimit, OptionalPath};

/// Largest prefetch a queue subscription may ask for. Bounds the unacked messages one
/// consumer can pin in memory; fits the wire's u16-sized windows of other brokers.
pub const MAX_PREFETCH: u32 = 65_535;

/// One configurable setting, as declared in [`settings`].
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable name.
    pub env: &'static str,
    /// `tern serve` flag, without the leading `--`.
    pub flag: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// What the value is, for `--help` (`N`, `MS`, `PORT`).
    pub value_name: &'static str,
    /// One-line description.
    pub help: &'static str,
    /// What it accepts, from the same declaration as its parsing: "a whole number
    /// from 1 to 10000000".
    pub expected: fn() -> String,
}

impl Setting {
    /// Looks a setting up by environment name.
    pub fn named(env: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|setting| setting.env == env)
    }

    /// The `--help` line of its flag: the description, what it accepts, the
    /// variable and the default.
    pub fn flag_help(&self) -> String {
        format!(
            "{}; {} [env: {}] [default: {}]",
            self.help,
            (self.expected)(),
            self.env,
            self.default
        )
    }
}

/// A configuration problem; the message names the variable and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value could not be parsed, or is out of range.
    #[error("invalid value `{value}` for {source_name}: expected {expected}")]
    Invalid {
        /// `DELIVERY_MODE` or `--delivery-mode`.
        source_name: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
}

/// `tern serve` flag values, by the environment name of their setting. Each
/// overrides its variable.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    values: HashMap<&'static str, String>,
}

impl Flags {
    /// Sets the flag of setting `env` (an [`env`](mod@env) constant) to `value`.
    pub fn set(&mut self, env: &'static str, value: impl Into<String>) {
        self.values.insert(env, value.into());
    }

    /// [`Flags::set`], by value.
    pub fn with(mut self, env: &'static str, value: impl Into<String>) -> Self {
        self.set(env, value);
        self
    }
}

/// Resolves one setting: flag, else environment, else default; then parses it.
struct Resolver<'a> {
    /// The known variables of the environment.
    environment: HashMap<String, String>,
    flags: &'a Flags,
}

impl Resolver<'_> {
    fn get<A: Accepts>(&self, setting: &Setting, accepts: &A) -> Result<A::Value, ConfigError> {
        // An empty or blank value counts as unset.
        let present =
            |value: Option<&String>| value.filter(|text| !text.trim().is_empty()).cloned();
        let from_flag = present(self.flags.values.get(setting.env));
        let from_environment = present(self.environment.get(setting.env));
        let (source_name, text) = match (from_flag, from_environment) {
            (Some(text), _) => (format!("--{}", setting.flag), text),
            (None, Some(text)) => (setting.env.to_owned(), text),
            (None, None) => (setting.env.to_owned(), setting.default.to_owned()),
        };
        accepts
            .parse(text.trim())
            .map_err(|rejected| ConfigError::Invalid {
                source_name,
                value: match rejected {
                    Rejected::Unparsable => text.clone(),
                    Rejected::OutOfRange(value) => value,
                },
                expected: accepts.expected(),
            })
    }
}

impl Config {
    /// Builds the configuration from an environment (as name/value pairs) and flags.
    /// Tests pass a map here instead of touching the process environment.
    pub fn from_sources(
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let environment = environment
            .into_iter()
            .filter(|(name, _)| Setting::named(name).is_some())
            .collect();
        Config::resolve(&Resolver { environment, flags })
    }
}

impl Default for Config {
    /// The embedded defaults (the `default` column of [`SETTINGS`]).
    fn default() -> Self {
        Config::from_sources(std::iter::empty(), &Flags::default())
            .expect("embedded defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tern_proto::DeliveryMode;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_original_services() {
        let config = Config::default();
        assert_eq!(config.tcp_port, 9080);
        assert_eq!(config.http_port, 8080);
        assert_eq!(config.delivery_mode, DeliveryMode::Broadcast);
        assert_eq!(config.max_consumers, 10);
        assert_eq!(config.consumer_channel_buffer_size, 10_000);
        assert_eq!(config.max_frame_bytes, tern_proto::DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn environment_overrides_defaults_and_flags_override_environment() {
        let environment = env(&[
            ("TCP_PORT", "7000"),
            ("DELIVERY_MODE", "queue"),
            ("UNRELATED", "x"),
        ]);
        let config = Config::from_sources(environment.clone(), &Flags::default()).expect("valid");
        assert_eq!(config.tcp_port, 7000);
        assert_eq!(config.delivery_mode, DeliveryMode::Queue);
        let flags = Flags::default().with(env::TCP_PORT, "7001");
        assert_eq!(
            Config::from_sources(environment, &flags)
                .expect("valid")
                .tcp_port,
            7001
        );
    }

    #[test]
    fn an_empty_variable_means_the_default() {
        let config =
            Config::from_sources(env(&[("TCP_PORT", "")]), &Flags::default()).expect("valid");
        assert_eq!(config.tcp_port, 9080);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_it_accepts() {
        let error = Config::from_sources(env(&[("DELIVERY_MODE", "fanout")]), &Flags::default())
            .expect_err("fanout is not a mode");
        let text = error.to_string();
        assert!(
            text.contains("DELIVERY_MODE")
                && text.contains("fanout")
                && text.contains("broadcast, queue"),
            "{text}"
        );

        let error =
            Config::from_sources(env(&[("TCP_PORT", "abc")]), &Flags::default()).expect_err("abc");
        assert!(error.to_string().contains("TCP_PORT"), "{error}");

        let error =
            Config::from_sources(env(&[("MAX_CONSUMERS", "0")]), &Flags::default()).expect_err("0");
        assert!(
            error.to_string().contains("MAX_CONSUMERS") && error.to_string().contains("from 1"),
            "{error}"
        );

        let flags = Flags::default().with(env::MAX_FRAME_BYTES, "10");
        let error = Config::from_sources(std::iter::empty(), &flags).expect_err("too small");
        assert!(error.to_string().contains("--max-frame-bytes"), "{error}");
    }

    #[test]
    fn every_default_is_valid_and_every_name_is_its_constant() {
        for setting in SETTINGS {
            assert_eq!(
                Setting::named(setting.env).map(|s| s.flag),
                Some(setting.flag)
            );
            let flags = Flags::default().with(setting.env, setting.default);
            Config::from_sources(std::iter::empty(), &flags)
                .unwrap_or_else(|error| panic!("{}: {error}", setting.env));
        }
        assert_eq!(env::MAX_CONSUMERS, "MAX_CONSUMERS");
    }
}
