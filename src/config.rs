//! Broker configuration: embedded defaults, overridden by environment variables
//! (read with envy), overridden by `tern serve` flags.
//!
//! Every setting has one environment name (the contract of the original service:
//! `TCP_PORT`, `HTTP_PORT`, `DELIVERY_MODE`, `MAX_CONSUMERS`,
//! `CONSUMER_CHANNEL_BUFFER_SIZE` keep their names and defaults) and one flag. A value
//! that does not parse, or is out of range, is a [`ConfigError`] naming the variable
//! and what it accepts; `main` turns it into exit code 2. An empty variable counts as
//! unset, so `TCP_PORT=` in a manifest means "the default".

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use tern_proto::DeliveryMode;

/// Largest prefetch a queue subscription may ask for. Bounds the unacked messages one
/// consumer can pin in memory.
pub const MAX_PREFETCH: u32 = 65_535;

/// Every setting: its environment variable, flag, default and meaning. The single
/// source for `--help`, `.env.example` and the README table (tests keep them in step).
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "BIND_ADDR",
        "bind-addr",
        "0.0.0.0",
        "Address both listeners bind to",
    ),
    Setting::new(
        "TCP_PORT",
        "tcp-port",
        "9080",
        "Port of the binary protocol listener (0 = any free port)",
    ),
    Setting::new(
        "HTTP_PORT",
        "http-port",
        "8080",
        "Port of /healthz and /ready (0 = any free port)",
    ),
    Setting::new(
        "DELIVERY_MODE",
        "delivery-mode",
        "broadcast",
        "Mode of subscriptions that name none: broadcast or queue",
    ),
    Setting::new(
        "MAX_CONSUMERS",
        "max-consumers",
        "10",
        "Most concurrent subscriptions, server-wide",
    ),
    Setting::new(
        "CONSUMER_CHANNEL_BUFFER_SIZE",
        "consumer-channel-buffer-size",
        "10000",
        "Broadcast messages buffered per connection (publishers slow down past half; a stalled subscriber's extra messages are dropped)",
    ),
    Setting::new(
        "QUEUE_MAX_MESSAGES",
        "queue-max-messages",
        "100000",
        "Most messages one queue holds (ready + unacked)",
    ),
    Setting::new(
        "QUEUE_MAX_BYTES",
        "queue-max-bytes",
        "67108864",
        "Most payload bytes one queue holds (ready + unacked)",
    ),
    Setting::new(
        "MAX_QUEUES",
        "max-queues",
        "10000",
        "Most queues the broker keeps",
    ),
    Setting::new(
        "MAX_FRAME_BYTES",
        "max-frame-bytes",
        "1048576",
        "Largest frame a client may send",
    ),
    Setting::new(
        "MAX_CONNECTIONS",
        "max-connections",
        "10000",
        "Most concurrent client connections",
    ),
    Setting::new(
        "DEFAULT_PREFETCH",
        "default-prefetch",
        "64",
        "Prefetch of a queue subscription that asks for 0",
    ),
    Setting::new(
        "HANDSHAKE_TIMEOUT_MS",
        "handshake-timeout-ms",
        "5000",
        "Time a new connection has to send HELLO",
    ),
    Setting::new(
        "PING_INTERVAL_SECS",
        "ping-interval-secs",
        "30",
        "Idle time before the server pings a client; twice this without traffic closes it",
    ),
    Setting::new(
        "WRITE_DEADLINE_MS",
        "write-deadline-ms",
        "10000",
        "Longest a write to a client may block before it is closed as a slow consumer",
    ),
    Setting::new(
        "SHUTDOWN_GRACE_SECS",
        "shutdown-grace-secs",
        "10",
        "Time clients get to settle acks after GOODBYE",
    ),
    Setting::new(
        "LOG_FORMAT",
        "log-format",
        "text",
        "Log output: text or json",
    ),
    Setting::new(
        "RUST_LOG",
        "log",
        "info",
        "Log filter, tracing-subscriber EnvFilter syntax",
    ),
];

/// One configurable setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable name.
    pub env: &'static str,
    /// `tern serve` flag, without the leading `--`.
    pub flag: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// One-line description.
    pub help: &'static str,
}

impl Setting {
    const fn new(
        env: &'static str,
        flag: &'static str,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Setting {
            env,
            flag,
            default,
            help,
        }
    }

    /// Looks a setting up by environment name.
    pub fn named(env: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|setting| setting.env == env)
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// A configuration problem; the message names the variable and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be parsed.
    #[error("invalid value `{value}` for {source_name}: expected {expected}")]
    Invalid {
        /// `DELIVERY_MODE` or `--delivery-mode`.
        source_name: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// The environment could not be read at all.
    #[error("cannot read the environment: {0}")]
    Environment(String),
}

/// The complete, validated broker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BIND_ADDR`.
    pub bind_addr: IpAddr,
    /// `TCP_PORT`.
    pub tcp_port: u16,
    /// `HTTP_PORT`.
    pub http_port: u16,
    /// `DELIVERY_MODE`: mode of a subscription that names none.
    pub delivery_mode: DeliveryMode,
    /// `MAX_CONSUMERS`: server-wide subscription cap.
    pub max_consumers: usize,
    /// `CONSUMER_CHANNEL_BUFFER_SIZE`: broadcast messages buffered per connection.
    pub consumer_channel_buffer_size: usize,
    /// `QUEUE_MAX_MESSAGES`.
    pub queue_max_messages: usize,
    /// `QUEUE_MAX_BYTES`.
    pub queue_max_bytes: u64,
    /// `MAX_QUEUES`.
    pub max_queues: usize,
    /// `MAX_FRAME_BYTES`.
    pub max_frame_bytes: u32,
    /// `MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `DEFAULT_PREFETCH`.
    pub default_prefetch: u32,
    /// `HANDSHAKE_TIMEOUT_MS`.
    pub handshake_timeout: Duration,
    /// `PING_INTERVAL_SECS`.
    pub ping_interval: Duration,
    /// `WRITE_DEADLINE_MS`.
    pub write_deadline: Duration,
    /// `SHUTDOWN_GRACE_SECS`.
    pub shutdown_grace: Duration,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`.
    pub log_filter: String,
}

impl Default for Config {
    /// The embedded defaults (the `default` column of [`SETTINGS`]).
    fn default() -> Self {
        Config::from_sources(std::iter::empty(), &ServeArgs::default())
            .expect("embedded defaults are valid")
    }
}

/// `tern serve` flags. Each overrides its environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address both listeners bind to [env: BIND_ADDR] [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub bind_addr: Option<String>,
    /// Port of the binary protocol listener, 0 = any [env: TCP_PORT] [default: 9080]
    #[arg(long, value_name = "PORT")]
    pub tcp_port: Option<String>,
    /// Port of /healthz and /ready, 0 = any [env: HTTP_PORT] [default: 8080]
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<String>,
    /// Mode of subscriptions that name none: broadcast|queue [env: DELIVERY_MODE] [default: broadcast]
    #[arg(long, value_name = "MODE")]
    pub delivery_mode: Option<String>,
    /// Most concurrent subscriptions, server-wide [env: MAX_CONSUMERS] [default: 10]
    #[arg(long, value_name = "N")]
    pub max_consumers: Option<String>,
    /// Broadcast messages buffered per connection before drops [env: CONSUMER_CHANNEL_BUFFER_SIZE] [default: 10000]
    #[arg(long, value_name = "N")]
    pub consumer_channel_buffer_size: Option<String>,
    /// Most messages one queue holds, ready + unacked [env: QUEUE_MAX_MESSAGES] [default: 100000]
    #[arg(long, value_name = "N")]
    pub queue_max_messages: Option<String>,
    /// Most payload bytes one queue holds [env: QUEUE_MAX_BYTES] [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub queue_max_bytes: Option<String>,
    /// Most queues the broker keeps [env: MAX_QUEUES] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_queues: Option<String>,
    /// Largest frame a client may send [env: MAX_FRAME_BYTES] [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<String>,
    /// Most concurrent client connections [env: MAX_CONNECTIONS] [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Prefetch of a queue subscription that asks for 0 [env: DEFAULT_PREFETCH] [default: 64]
    #[arg(long, value_name = "N")]
    pub default_prefetch: Option<String>,
    /// Time a new connection has to send HELLO [env: HANDSHAKE_TIMEOUT_MS] [default: 5000]
    #[arg(long, value_name = "MS")]
    pub handshake_timeout_ms: Option<String>,
    /// Idle time before the server pings a client [env: PING_INTERVAL_SECS] [default: 30]
    #[arg(long, value_name = "SECS")]
    pub ping_interval_secs: Option<String>,
    /// Longest a write to a client may block before it is closed as a slow consumer [env: WRITE_DEADLINE_MS] [default: 10000]
    #[arg(long, value_name = "MS")]
    pub write_deadline_ms: Option<String>,
    /// Time clients get to settle acks after GOODBYE [env: SHUTDOWN_GRACE_SECS] [default: 10]
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace_secs: Option<String>,
    /// Log output: text|json [env: LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, EnvFilter syntax [env: RUST_LOG] [default: info]
    #[arg(long = "log", value_name = "FILTER")]
    pub log: Option<String>,
}

impl ServeArgs {
    /// Each flag's value under its environment variable's name.
    fn by_variable(&self) -> HashMap<&'static str, &Option<String>> {
        HashMap::from([
            ("BIND_ADDR", &self.bind_addr),
            ("TCP_PORT", &self.tcp_port),
            ("HTTP_PORT", &self.http_port),
            ("DELIVERY_MODE", &self.delivery_mode),
            ("MAX_CONSUMERS", &self.max_consumers),
            (
                "CONSUMER_CHANNEL_BUFFER_SIZE",
                &self.consumer_channel_buffer_size,
            ),
            ("QUEUE_MAX_MESSAGES", &self.queue_max_messages),
            ("QUEUE_MAX_BYTES", &self.queue_max_bytes),
            ("MAX_QUEUES", &self.max_queues),
            ("MAX_FRAME_BYTES", &self.max_frame_bytes),
            ("MAX_CONNECTIONS", &self.max_connections),
            ("DEFAULT_PREFETCH", &self.default_prefetch),
            ("HANDSHAKE_TIMEOUT_MS", &self.handshake_timeout_ms),
            ("PING_INTERVAL_SECS", &self.ping_interval_secs),
            ("WRITE_DEADLINE_MS", &self.write_deadline_ms),
            ("SHUTDOWN_GRACE_SECS", &self.shutdown_grace_secs),
            ("LOG_FORMAT", &self.log_format),
            ("RUST_LOG", &self.log),
        ])
    }
}

/// Resolves one setting: flag, else environment, else default; then parses it.
struct Resolver<'a> {
    /// Known variables as envy read them (envy lowercases the names).
    environment: HashMap<String, String>,
    flags: HashMap<&'static str, &'a Option<String>>,
}

impl Resolver<'_> {
    fn get<T: FromStr>(&self, env: &'static str, expected: &str) -> Result<T, ConfigError> {
        let setting = Setting::named(env).expect("every resolved name is in SETTINGS");
        // An empty or blank value counts as unset.
        let present =
            |value: Option<&String>| value.filter(|text| !text.trim().is_empty()).cloned();
        let from_flag = present(self.flags.get(env).and_then(|value| value.as_ref()));
        let from_environment = present(self.environment.get(&env.to_ascii_lowercase()));
        let (source_name, text) = match (from_flag, from_environment) {
            (Some(text), _) => (format!("--{}", setting.flag), text),
            (None, Some(text)) => (env.to_owned(), text),
            (None, None) => (env.to_owned(), setting.default.to_owned()),
        };
        text.trim().parse::<T>().map_err(|_| ConfigError::Invalid {
            source_name,
            value: text.clone(),
            expected: expected.to_owned(),
        })
    }

    fn at_least<T>(
        &self,
        env: &'static str,
        minimum: T,
        maximum: T,
        what: &str,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let expected = format!("{what} from {minimum} to {maximum}");
        let value: T = self.get(env, &expected)?;
        if value < minimum || value > maximum {
            let setting = Setting::named(env).expect("known setting");
            let from_flag = self.flags.get(env).is_some_and(|value| value.is_some());
            return Err(ConfigError::Invalid {
                source_name: if from_flag {
                    format!("--{}", setting.flag)
                } else {
                    env.to_owned()
                },
                value: value.to_string(),
                expected,
            });
        }
        Ok(value)
    }
}

impl Config {
    /// Builds the configuration from an environment (as name/value pairs) and flags.
    /// Tests pass a map here instead of touching the process environment.
    pub fn from_sources(
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &ServeArgs,
    ) -> Result<Config, ConfigError> {
        let known: Vec<(String, String)> = environment
            .into_iter()
            .filter(|(name, _)| Setting::named(name).is_some())
            .collect();
        let environment: HashMap<String, String> =
            envy::from_iter(known).map_err(|error| ConfigError::Environment(error.to_string()))?;
        let resolver = Resolver {
            environment,
            flags: flags.by_variable(),
        };
        let count = "a whole number";
        Ok(Config {
            bind_addr: resolver.get(
                "BIND_ADDR",
                "an IPv4 or IPv6 address such as 0.0.0.0 or 127.0.0.1",
            )?,
            tcp_port: resolver.get("TCP_PORT", "a port number from 0 to 65535")?,
            http_port: resolver.get("HTTP_PORT", "a port number from 0 to 65535")?,
            delivery_mode: resolver.get("DELIVERY_MODE", "one of: broadcast, queue")?,
            max_consumers: resolver.at_least("MAX_CONSUMERS", 1, 10_000_000, count)?,
            consumer_channel_buffer_size: resolver.at_least(
                "CONSUMER_CHANNEL_BUFFER_SIZE",
                1,
                100_000_000,
                count,
            )?,
            queue_max_messages: resolver.at_least("QUEUE_MAX_MESSAGES", 1, 1_000_000_000, count)?,
            queue_max_bytes: resolver.at_least(
                "QUEUE_MAX_BYTES",
                1,
                1 << 40,
                "a number of bytes",
            )?,
            max_queues: resolver.at_least("MAX_QUEUES", 1, 10_000_000, count)?,
            max_frame_bytes: resolver.at_least(
                "MAX_FRAME_BYTES",
                1024,
                64 << 20,
                "a number of bytes",
            )?,
            max_connections: resolver.at_least("MAX_CONNECTIONS", 1, 10_000_000, count)?,
            default_prefetch: resolver.at_least("DEFAULT_PREFETCH", 1, MAX_PREFETCH, count)?,
            handshake_timeout: Duration::from_millis(resolver.at_least(
                "HANDSHAKE_TIMEOUT_MS",
                1,
                3_600_000,
                "milliseconds",
            )?),
            ping_interval: Duration::from_secs(resolver.at_least(
                "PING_INTERVAL_SECS",
                1,
                86_400,
                "seconds",
            )?),
            write_deadline: Duration::from_millis(resolver.at_least(
                "WRITE_DEADLINE_MS",
                1,
                3_600_000,
                "milliseconds",
            )?),
            shutdown_grace: Duration::from_secs(resolver.at_least(
                "SHUTDOWN_GRACE_SECS",
                0,
                3_600,
                "seconds",
            )?),
            log_format: resolver.get("LOG_FORMAT", "one of: text, json")?,
            log_filter: resolver.get::<String>("RUST_LOG", "a log filter")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let config =
            Config::from_sources(environment.clone(), &ServeArgs::default()).expect("valid");
        assert_eq!(config.tcp_port, 7000);
        assert_eq!(config.delivery_mode, DeliveryMode::Queue);
        let flags = ServeArgs {
            tcp_port: Some("7001".into()),
            ..ServeArgs::default()
        };
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
            Config::from_sources(env(&[("TCP_PORT", "")]), &ServeArgs::default()).expect("valid");
        assert_eq!(config.tcp_port, 9080);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_it_accepts() {
        let error =
            Config::from_sources(env(&[("DELIVERY_MODE", "fanout")]), &ServeArgs::default())
                .expect_err("fanout is not a mode");
        let text = error.to_string();
        assert!(
            text.contains("DELIVERY_MODE")
                && text.contains("fanout")
                && text.contains("broadcast, queue"),
            "{text}"
        );

        let error = Config::from_sources(env(&[("TCP_PORT", "abc")]), &ServeArgs::default())
            .expect_err("abc");
        assert!(error.to_string().contains("TCP_PORT"), "{error}");

        let error = Config::from_sources(env(&[("MAX_CONSUMERS", "0")]), &ServeArgs::default())
            .expect_err("0");
        assert!(
            error.to_string().contains("MAX_CONSUMERS") && error.to_string().contains("from 1"),
            "{error}"
        );

        let flags = ServeArgs {
            max_frame_bytes: Some("10".into()),
            ..ServeArgs::default()
        };
        let error = Config::from_sources(std::iter::empty(), &flags).expect_err("too small");
        assert!(error.to_string().contains("--max-frame-bytes"), "{error}");
    }

    #[test]
    fn every_flag_help_names_its_variable_and_default() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let command = Wrapper::command();
        for setting in SETTINGS {
            let argument = command
                .get_arguments()
                .find(|argument| argument.get_long() == Some(setting.flag))
                .unwrap_or_else(|| panic!("no --{} flag", setting.flag));
            let help = argument
                .get_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains(&format!("[env: {}]", setting.env)),
                "--{}: {help}",
                setting.flag
            );
            assert!(
                help.contains(&format!("[default: {}]", setting.default)),
                "--{}: {help}",
                setting.flag
            );
        }
    }

    #[test]
    fn the_readme_table_lists_every_setting_with_its_flag_and_default() {
        let readme = include_str!("../README.md");
        for setting in SETTINGS {
            let row = format!(
                "| `{}` | `--{}` | `{}` |",
                setting.env, setting.flag, setting.default
            );
            assert!(readme.contains(&row), "README.md lacks the row `{row}`");
        }
    }

    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let example = include_str!("../.env.example");
        for setting in SETTINGS {
            let line = format!("{}={}", setting.env, setting.default);
            assert!(
                example.lines().any(|l| l.trim() == line),
                ".env.example lacks `{line}`"
            );
        }
    }
}
