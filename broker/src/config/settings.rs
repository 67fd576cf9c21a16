//! Every setting, declared once: its [`Config`] field and type, environment
//! variable, `tern serve` flag, default, what it accepts and its help line.
//! `.env.example`, the README's configuration table and `tern serve --help` are
//! checked against (or generated from) this list.

use std::net::IpAddr;
use std::time::Duration;

use tern_proto::DeliveryMode;

use super::values::{Between, LogFormat, MemoryLimit, OptionalPath, Parsed, Time};
use super::MAX_PREFETCH;
use crate::store::{FsyncPolicy, StoreUrl};

/// How counts are described in errors.
const COUNT: &str = "a whole number";
/// How byte sizes are described in errors.
const BYTES: &str = "a number of bytes";

settings! {
    /// `BIND_ADDR`: the address both listeners bind to.
    bind_addr: IpAddr = BIND_ADDR {
        flag: "bind-addr",
        default: "0.0.0.0",
        value: "IP",
        accepts: Parsed::new("an IPv4 or IPv6 address such as 0.0.0.0 or 127.0.0.1"),
        help: "Address both listeners bind to",
    }
    /// `TCP_PORT`: the binary protocol's port (0: any free port).
    tcp_port: u16 = TCP_PORT {
        flag: "tcp-port",
        default: "9080",
        value: "PORT",
        accepts: Parsed::new("a port number from 0 to 65535"),
        help: "Port of the binary protocol listener (0 = any free port)",
    }
    /// `HTTP_PORT`: the port of `/healthz`, `/ready` and `/metrics` (0: any).
    http_port: u16 = HTTP_PORT {
        flag: "http-port",
        default: "8080",
        value: "PORT",
        accepts: Parsed::new("a port number from 0 to 65535"),
        help: "Port of /healthz and /ready (0 = any free port)",
    }
    /// `HTTP_MAX_CONNECTIONS`: the most HTTP connections open at once.
    http_max_connections: usize = HTTP_MAX_CONNECTIONS {
        flag: "http-max-connections",
        default: "256",
        value: "N",
        accepts: Between::new(1, 1_000_000, COUNT),
        help: "Most HTTP connections open at once; at the cap a new one closes the oldest, so probes keep answering",
    }
    /// `HTTP_REQUEST_TIMEOUT_MS`: the time an HTTP connection has for its request.
    http_request_timeout: Duration = HTTP_REQUEST_TIMEOUT_MS {
        flag: "http-request-timeout-ms",
        default: "5000",
        value: "MS",
        accepts: Time::millis(100, 3_600_000),
        help: "Time an HTTP connection has to send its request and read the answer (one request per connection)",
    }
    /// `LISTEN_BACKLOG`: connections the kernel queues before they are accepted.
    listen_backlog: u32 = LISTEN_BACKLOG {
        flag: "listen-backlog",
        default: "1024",
        value: "N",
        accepts: Between::new(1, 65_535, COUNT),
        help: "Connections the kernel holds for the listeners before they are accepted (capped by net.core.somaxconn)",
    }
    /// `DELIVERY_MODE`: the mode of a subscription that names none.
    delivery_mode: DeliveryMode = DELIVERY_MODE {
        flag: "delivery-mode",
        default: "broadcast",
        value: "MODE",
        accepts: Parsed::new("one of: broadcast, queue"),
        help: "Mode of subscriptions that name none: broadcast or queue",
    }
    /// `MAX_CONSUMERS`: the server-wide subscription cap.
    max_consumers: usize = MAX_CONSUMERS {
        flag: "max-consumers",
        default: "10",
        value: "N",
        accepts: Between::new(1, 10_000_000, COUNT),
        help: "Most concurrent subscriptions, server-wide",
    }
    /// `MAX_SUBSCRIPTIONS_PER_CONNECTION`: the most subscriptions one connection
    /// holds, so one client cannot take every `MAX_CONSUMERS` slot.
    max_subscriptions_per_connection: usize = MAX_SUBSCRIPTIONS_PER_CONNECTION {
        flag: "max-subscriptions-per-connection",
        default: "1000",
        value: "N",
        accepts: Between::new(1, 10_000_000, COUNT),
        help: "Most subscriptions one connection may hold (one client cannot take every MAX_CONSUMERS slot)",
    }
    /// `CONSUMER_CHANNEL_BUFFER_SIZE`: broadcast messages buffered per connection.
    consumer_channel_buffer_size: usize = CONSUMER_CHANNEL_BUFFER_SIZE {
        flag: "consumer-channel-buffer-size",
        default: "10000",
        value: "N",
        accepts: Between::new(1, 100_000_000, COUNT),
        help: "Broadcast messages buffered per connection (publishers slow down past half; a stalled subscriber's extra messages are dropped)",
    }
    /// `CONSUMER_CHANNEL_BUFFER_BYTES`: frame bytes buffered per connection.
    consumer_channel_buffer_bytes: usize = CONSUMER_CHANNEL_BUFFER_BYTES {
        flag: "consumer-channel-buffer-bytes",
        default: "67108864",
        value: "BYTES",
        // At least 16 MiB: well above the 4 MiB at which publishers pause for a
        // subscriber, so only a stalled subscriber ever reaches it.
        accepts: Between::new(16 << 20, 1 << 40, BYTES),
        help: "Bytes of frames buffered per connection; a stalled subscriber's broadcast messages beyond them are dropped like beyond CONSUMER_CHANNEL_BUFFER_SIZE",
    }
    /// `SLOW_CONSUMER_STALL_MS`: how long a subscriber's connection may accept no
    /// bytes before publishers stop waiting for it and drop its excess broadcast
    /// messages.
    slow_consumer_stall: Duration = SLOW_CONSUMER_STALL_MS {
        flag: "slow-consumer-stall-ms",
        default: "1000",
        value: "MS",
        accepts: Time::millis(10, 3_600_000),
        help: "Time a subscriber's connection may accept no bytes before publishers stop waiting for it (its excess broadcast messages are then dropped)",
    }
    /// `QUEUE_MAX_MESSAGES`: the most messages one queue holds (ready + unacked).
    queue_max_messages: usize = QUEUE_MAX_MESSAGES {
        flag: "queue-max-messages",
        default: "100000",
        value: "N",
        accepts: Between::new(1, 1_000_000_000, COUNT),
        help: "Most messages one queue holds (ready + unacked)",
    }
    /// `QUEUE_MAX_BYTES`: the most payload bytes one queue holds.
    queue_max_bytes: u64 = QUEUE_MAX_BYTES {
        flag: "queue-max-bytes",
        default: "67108864",
        value: "BYTES",
        accepts: Between::new(1, 1 << 40, BYTES),
        help: "Most payload bytes one queue holds (ready + unacked)",
    }
    /// `MEMORY_LIMIT`: the most bytes of queued messages the whole broker holds.
    memory_limit: MemoryLimit = MEMORY_LIMIT {
        flag: "memory-limit",
        default: "60%",
        value: "BYTES|PCT%",
        accepts: Parsed::new("a percentage of the memory available (such as 60%) or a number of bytes (0 = no limit)"),
        help: "Most bytes of queued messages in the whole broker: a share of the memory available (cgroup limit, else physical memory) or bytes; at it, publishes to queues get MEMORY_LIMIT until they drain below 90%",
    }
    /// `STORE_URL`: where queues live: `mem://` or `file://DIR`.
    store_url: StoreUrl = STORE_URL {
        flag: "store-url",
        default: "mem://",
        value: "URL",
        accepts: Parsed::new("mem:// or file://DIRECTORY (file:///var/lib/tern, file://./data)"),
        help: "Where queues live: mem:// (memory only, lost on restart) or file://DIR (durable queue logs in DIR, created if missing, locked while the broker runs)",
    }
    /// `STORE_FSYNC`: when a write to a durable queue counts as stored.
    store_fsync: FsyncPolicy = STORE_FSYNC {
        flag: "store-fsync",
        default: "always",
        value: "POLICY",
        accepts: Parsed::new("always, interval:MS (1 to 60000) or never"),
        help: "With file://: always (PUBLISH_OK after fsync; concurrent publishes share one fsync), interval:MS (PUBLISH_OK after write, fsync every MS milliseconds) or never (the OS decides)",
    }
    /// `STORE_SEGMENT_BYTES`: the size at which a queue's log segment is rolled.
    store_segment_bytes: u64 = STORE_SEGMENT_BYTES {
        flag: "store-segment-bytes",
        default: "67108864",
        value: "BYTES",
        accepts: Between::new(1 << 16, 1 << 32, BYTES),
        help: "With file://: size at which a queue's log segment file is closed and a new one started; wholly acked segments are deleted, mostly acked ones compacted",
    }
    /// `MAX_QUEUES`: the most queues the broker keeps.
    max_queues: usize = MAX_QUEUES {
        flag: "max-queues",
        default: "10000",
        value: "N",
        accepts: Between::new(1, 10_000_000, COUNT),
        help: "Most queues the broker keeps",
    }
    /// `QUEUE_EXPIRE_SECS`: how long a queue may stay empty with no consumer before
    /// it is deleted (0: never).
    queue_expire: Duration = QUEUE_EXPIRE_SECS {
        flag: "queue-expire-secs",
        default: "300",
        value: "SECS",
        accepts: Time::secs(0, 31_536_000),
        help: "Seconds a queue may stay empty with no consumer before it is deleted (0 = never); queues holding messages are kept",
    }
    /// `MAX_FRAME_BYTES`: the largest frame a client may send.
    max_frame_bytes: u32 = MAX_FRAME_BYTES {
        flag: "max-frame-bytes",
        default: "1048576",
        value: "BYTES",
        accepts: Between::new(1024, 64 << 20, BYTES),
        help: "Largest frame a client may send",
    }
    /// `MAX_CONNECTIONS`: the most concurrent client connections.
    max_connections: usize = MAX_CONNECTIONS {
        flag: "max-connections",
        default: "10000",
        value: "N",
        accepts: Between::new(1, 10_000_000, COUNT),
        help: "Most concurrent client connections",
    }
    /// `DEFAULT_PREFETCH`: the prefetch of a queue subscription that asks for 0.
    default_prefetch: u32 = DEFAULT_PREFETCH {
        flag: "default-prefetch",
        default: "64",
        value: "N",
        accepts: Between::new(1, MAX_PREFETCH, COUNT),
        help: "Prefetch of a queue subscription that asks for 0",
    }
    /// `HANDSHAKE_TIMEOUT_MS`: the time a new connection has to send HELLO.
    handshake_timeout: Duration = HANDSHAKE_TIMEOUT_MS {
        flag: "handshake-timeout-ms",
        default: "5000",
        value: "MS",
        accepts: Time::millis(1, 3_600_000),
        help: "Time a new connection has to send HELLO",
    }
    /// `PING_INTERVAL_SECS`: idle time before the server pings a client.
    ping_interval: Duration = PING_INTERVAL_SECS {
        flag: "ping-interval-secs",
        default: "30",
        value: "SECS",
        accepts: Time::secs(1, 86_400),
        help: "Idle time before the server pings a client; twice this without traffic closes it",
    }
    /// `WRITE_DEADLINE_MS`: the longest one write to a client may block.
    write_deadline: Duration = WRITE_DEADLINE_MS {
        flag: "write-deadline-ms",
        default: "10000",
        value: "MS",
        accepts: Time::millis(1, 3_600_000),
        help: "Longest a write to a client may block before it is closed as a slow consumer",
    }
    /// `SHUTDOWN_GRACE_SECS`: the time clients get to settle acks after GOODBYE.
    shutdown_grace: Duration = SHUTDOWN_GRACE_SECS {
        flag: "shutdown-grace-secs",
        default: "10",
        value: "SECS",
        accepts: Time::secs(0, 3_600),
        help: "Time clients get to settle acks after GOODBYE",
    }
    /// `TLS_CERT_FILE`: the protocol listener's certificate chain (PEM); with
    /// `TLS_KEY_FILE` it turns TLS on.
    tls_cert_file: OptionalPath = TLS_CERT_FILE {
        flag: "tls-cert-file",
        default: "",
        value: "PATH",
        accepts: Parsed::new("a file path"),
        help: "Certificate chain (PEM, leaf first) of the protocol listener; with TLS_KEY_FILE, clients must speak TLS 1.2 or 1.3 from the first byte. Reloaded on SIGHUP and when the file changes",
    }
    /// `TLS_KEY_FILE`: the private key of `TLS_CERT_FILE` (PEM).
    tls_key_file: OptionalPath = TLS_KEY_FILE {
        flag: "tls-key-file",
        default: "",
        value: "PATH",
        accepts: Parsed::new("a file path"),
        help: "Private key (PEM: PKCS#8, PKCS#1 or SEC1) of TLS_CERT_FILE",
    }
    /// `TLS_CLIENT_CA_FILE`: CAs whose client certificates are required (mutual TLS).
    tls_client_ca_file: OptionalPath = TLS_CLIENT_CA_FILE {
        flag: "tls-client-ca-file",
        default: "",
        value: "PATH",
        accepts: Parsed::new("a file path"),
        help: "CA certificates (PEM); when set, every client must present a certificate they signed (mutual TLS), whose CN or SAN can name a user in AUTH_FILE",
    }
    /// `AUTH_FILE`: users, credentials and permissions (TOML).
    auth_file: OptionalPath = AUTH_FILE {
        flag: "auth-file",
        default: "",
        value: "PATH",
        accepts: Parsed::new("a file path"),
        help: "Users, token hashes, certificate identities and subject permissions (TOML, see docs/SECURITY.md); when set, every connection must authenticate. Reloaded on SIGHUP and when the file changes",
    }
    /// `HTTP_AUTH_TOKEN_FILE`: the bearer token `/metrics` requires.
    http_auth_token_file: OptionalPath = HTTP_AUTH_TOKEN_FILE {
        flag: "http-auth-token-file",
        default: "",
        value: "PATH",
        accepts: Parsed::new("a file path"),
        help: "File holding the bearer token (16 characters or more) that /metrics requires; /healthz and /ready stay open for probes",
    }
    /// `HTTP_TLS`: serve the HTTP endpoints over TLS with `TLS_CERT_FILE`.
    http_tls: bool = HTTP_TLS {
        flag: "http-tls",
        default: "false",
        value: "BOOL",
        accepts: Parsed::new("true or false"),
        help: "Serve /healthz, /ready and /metrics over HTTPS with TLS_CERT_FILE (probes then need scheme HTTPS)",
    }
    /// `LOG_FORMAT`: text or JSON logs.
    log_format: LogFormat = LOG_FORMAT {
        flag: "log-format",
        default: "text",
        value: "FORMAT",
        accepts: Parsed::new("one of: text, json"),
        help: "Log output: text or json",
    }
    /// `RUST_LOG`: the log filter (tracing-subscriber `EnvFilter` syntax).
    log_filter: String = RUST_LOG {
        flag: "log",
        default: "info",
        value: "FILTER",
        accepts: Parsed::new("a log filter"),
        help: "Log filter, tracing-subscriber EnvFilter syntax",
    }
}
