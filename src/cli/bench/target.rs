//! What a benchmark talks to: a Tern broker (through `tern-client`), a NATS server
//! (through the official `async-nats` client, with the `nats` feature), or the
//! bare ceilings: a direct TCP connection, or a minimal relay (`tern relay`) that
//! copies length-prefixed frames from one socket to another.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tern_client::{Client, ClientOptions, QueueSubscription, ReconnectPolicy, Role, Subscription};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// Bytes a frame publisher buffers before it writes.
const FRAME_WRITE_BYTES: usize = 64 * 1024;

/// A confirmation on its way; resolves to how long it took from the send.
type PendingConfirm =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Duration>> + Send>>;
type Pending = futures_util::stream::FuturesUnordered<PendingConfirm>;

/// Where the benchmark sends its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Tern broker at this address.
    Tern(String),
    /// A NATS server at this URL (`nats://host:port`).
    Nats(String),
    /// One TCP connection straight from the publisher to the receiver.
    Direct,
    /// A `tern relay` at this address.
    Relay(String),
    /// A RabbitMQ server at this URL (`amqp://host:port`; queue workload).
    Amqp(String),
}

impl Target {
    /// Parses `--target`: `tern://HOST:PORT`, `nats://HOST:PORT`, `direct`,
    /// `relay://HOST:PORT`, or a bare `HOST:PORT` (Tern).
    pub fn parse(text: &str) -> anyhow::Result<Target> {
        Ok(match text.split_once("://") {
            Some(("tern", address)) => Target::Tern(address.to_owned()),
            Some(("nats", _)) => Target::Nats(text.to_owned()),
            Some(("relay", address)) => Target::Relay(address.to_owned()),
            Some(("amqp", _)) => Target::Amqp(text.to_owned()),
            Some((scheme, _)) => {
                bail!("unknown target scheme `{scheme}` (tern, nats, amqp, relay)")
            }
            None if text == "direct" => Target::Direct,
            None => Target::Tern(text.to_owned()),
        })
    }

    /// A short name for reports.
    pub fn label(&self) -> String {
        match self {
            Target::Tern(address) => format!("tern {address}"),
            Target::Nats(url) => format!("nats {url}"),
            Target::Direct => "direct TCP (ceiling)".to_owned(),
            Target::Relay(address) => format!("relay {address} (ceiling)"),
            Target::Amqp(url) => format!("rabbitmq {url}"),
        }
    }
}

/// How every benchmark connection reaches its broker: TLS trusting a CA, a token.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Speak TLS, trusting this CA (PEM).
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the broker's certificate must carry (Tern; NATS uses the URL's host).
    pub tls_server_name: Option<String>,
    /// A client certificate and its key, for mutual TLS.
    pub client_certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Token (Tern HELLO, NATS auth token).
    pub token: Option<String>,
}

static SECURITY: std::sync::OnceLock<Security> = std::sync::OnceLock::new();

/// Sets how this process's benchmark connections connect (once, before any).
pub fn set_security(security: Security) {
    let _ = SECURITY.set(security);
}

fn security() -> Security {
    SECURITY.get().cloned().unwrap_or_default()
}

pub async fn tern_client(address: &str, name: &str) -> anyhow::Result<Client> {
    let security = security();
    let mut options = ClientOptions::default()
        .name(name)
        .role(Role::Both)
        .reconnect(ReconnectPolicy::disabled());
    if let Some(token) = security.token {
        options = options.token(token);
    }
    if let Some(ca_file) = security.tls_ca {
        let (cert_file, key_file) = security.client_certificate.clone().unzip();
        options = options.tls(tern_client::TlsOptions {
            ca_file: Some(ca_file),
            server_name: security.tls_server_name,
            cert_file,
            key_file,
        });
    }
    Client::connect_with(address.to_owned(), options)
        .await
        .map_err(|error| anyhow!("{error}"))
}

#[cfg(feature = "nats")]
async fn nats_client(url: &str) -> anyhow::Result<async_nats::Client> {
    let security = security();
    let mut options = async_nats::ConnectOptions::new();
    if let Some(token) = security.token {
        options = options.token(token);
    }
    if let Some(ca_file) = security.tls_ca {
        options = options.require_tls(true).add_root_certificates(ca_file);
    }
    if let Some((cert, key)) = security.client_certificate {
        options = options.add_client_certificate(cert, key);
    }
    options
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

#[cfg(not(feature = "rabbitmq"))]
fn no_rabbitmq<T>() -> anyhow::Result<T> {
    bail!("this tern was built without RabbitMQ support: build with `--features rabbitmq`")
}

#[cfg(not(feature = "nats"))]
fn no_nats<T>() -> anyhow::Result<T> {
    bail!("this tern was built without NATS support: build with `--features nats`")
}

/// A connection that publishes (one per publisher task).
#[allow(clippy::large_enum_variant)]
pub enum Publisher {
    /// Tern.
    Tern(Client),
    /// NATS core publish.
    #[cfg(feature = "nats")]
    Nats(async_nats::Client),
    /// Length-prefixed frames on a socket, written in 64 KiB batches.
    Frames(TcpStream, BytesMut),
    /// Confirmed publishes, this many in flight (queue workload), and the time each
    /// confirmation took (nanoseconds).
    Confirmed(Confirmer, Pending, usize, hdrhistogram::Histogram<u64>),
    /// RabbitMQ, without publisher confirms.
    #[cfg(feature = "rabbitmq")]
    Rabbit(super::rabbitmq::RabbitPublisher),
}

/// What a confirmed publisher publishes through (one per publisher task: the
/// variants' sizes do not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Confirmer {
    /// Tern `publish_confirmed`; QUEUE_FULL is retried after a millisecond.
    Tern(Client),
    /// JetStream publish, awaiting its PubAck.
    #[cfg(feature = "nats")]
    JetStream(async_nats::jetstream::Context),
    /// RabbitMQ publish with publisher confirms.
    #[cfg(feature = "rabbitmq")]
    Rabbit(super::rabbitmq::RabbitPublisher),
}

impl Confirmer {
    /// Sends one message now, in call order, and returns the wait for its
    /// confirmation (so messages leave in sequence order however their
    /// confirmations interleave).
    async fn send(
        &self,
        subject: &str,
        header: Option<(&str, &str)>,
        payload: &[u8],
    ) -> anyhow::Result<PendingConfirm> {
        match self {
            Confirmer::Tern(client) => {
                let client = client.clone();
                let subject = subject.to_owned();
                let payload = Bytes::copy_from_slice(payload);
                let header = header.map(|(name, value)| (name.to_owned(), value.to_owned()));
                let sent_at = std::time::Instant::now();
                let mut confirm: PendingConfirm = Box::pin(async move {
                    loop {
                        let sent = match &header {
                            None => client.publish_confirmed(&subject, &payload).await,
                            Some((name, value)) => {
                                let message = tern_client::OutgoingMessage::new(
                                    subject.clone(),
                                    payload.clone(),
                                )
                                .header(name.as_str(), value.as_str());
                                client.send_confirmed(message).await
                            }
                        };
                        match sent {
                            Ok(()) => return Ok(sent_at.elapsed()),
                            Err(error)
                                if error.code() == Some(tern_client::ErrorCode::QueueFull) =>
                            {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            Err(error) => return Err(anyhow!("publish: {error}")),
                        }
                    }
                });
                // The first poll writes the PUBLISH; later polls only wait.
                let waker = futures_util::task::noop_waker_ref();
                match confirm
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(waker))
                {
                    std::task::Poll::Ready(result) => {
                        let took = result?;
                        Ok(Box::pin(async move { Ok(took) }))
                    }
                    std::task::Poll::Pending => Ok(confirm),
                }
            }
            #[cfg(feature = "nats")]
            Confirmer::JetStream(jetstream) => {
                let sent_at = std::time::Instant::now();
                let ack = jetstream
                    .publish(subject.to_owned(), Bytes::copy_from_slice(payload))
                    .await
                    .map_err(|error| anyhow!("publish: {error}"))?;
                Ok(Box::pin(async move {
                    ack.await.map_err(|error| anyhow!("PubAck: {error}"))?;
                    Ok(sent_at.elapsed())
                }))
            }
            #[cfg(feature = "rabbitmq")]
            Confirmer::Rabbit(publisher) => {
                let sent_at = std::time::Instant::now();
                let confirm = publisher.send(payload).await?;
                Ok(Box::pin(async move {
                    let confirmation =
                        confirm.await.map_err(|error| anyhow!("confirm: {error}"))?;
                    if confirmation.is_nack() {
                        bail!("RabbitMQ refused (nack) a publish");
                    }
                    Ok(sent_at.elapsed())
                }))
            }
        }
    }
}

impl Publisher {
    /// How long confirmations took, for a confirmed publisher.
    pub fn confirm_latency(&self) -> Option<&hdrhistogram::Histogram<u64>> {
        match self {
            Publisher::Confirmed(.., took) => Some(took),
            _ => None,
        }
    }

    /// Sends one message (buffered: call [`Publisher::flush`] at the end), with
    /// one header when `header` is set (Tern only: `--filtered`).
    pub async fn publish(
        &mut self,
        subject: &str,
        header: Option<(&str, &str)>,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        match self {
            Publisher::Tern(client) => match header {
                None => client.publish(subject, payload).await,
                Some((name, value)) => {
                    let message =
                        tern_client::OutgoingMessage::new(subject, Bytes::copy_from_slice(payload))
                            .header(name, value);
                    client.send(message).await
                }
            }
            .map_err(|error| anyhow!("publish: {error}")),
            #[cfg(feature = "nats")]
            Publisher::Nats(client) => client
                .publish(subject.to_owned(), Bytes::copy_from_slice(payload))
                .await
                .context("publish"),
            #[cfg(feature = "rabbitmq")]
            Publisher::Rabbit(publisher) => publisher.send(payload).await.map(drop),
            Publisher::Confirmed(confirmer, pending, window, took) => {
                if pending.len() >= *window {
                    if let Some(result) = pending.next().await {
                        let _ = took.record(result?.as_nanos().max(1) as u64);
                    }
                }
                let confirm = confirmer.send(subject, header, payload).await?;
                pending.push(confirm);
                Ok(())
            }
            Publisher::Frames(socket, buffer) => {
                buffer.put_u32(payload.len() as u32);
                buffer.put_slice(payload);
                if buffer.len() >= FRAME_WRITE_BYTES {
                    socket.write_all(buffer).await?;
                    buffer.clear();
                }
                Ok(())
            }
        }
    }

    /// Ends a batch of publishes: the frame publisher writes what it buffered (the
    /// clients' own writer tasks already write as soon as they can).
    pub async fn end_batch(&mut self) -> anyhow::Result<()> {
        if let Publisher::Frames(socket, buffer) = self {
            if !buffer.is_empty() {
                socket.write_all(buffer).await?;
                buffer.clear();
            }
        }
        Ok(())
    }

    /// Waits until everything published has left (Tern, NATS: a server round trip).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Publisher::Tern(client) => client
                .flush()
                .await
                .map_err(|error| anyhow!("flush: {error}")),
            #[cfg(feature = "nats")]
            Publisher::Nats(client) => client.flush().await.context("flush"),
            Publisher::Frames(socket, buffer) => {
                socket.write_all(buffer).await?;
                buffer.clear();
                socket.flush().await?;
                Ok(())
            }
            #[cfg(feature = "rabbitmq")]
            Publisher::Rabbit(_) => Ok(()),
            Publisher::Confirmed(_, pending, _, took) => {
                while let Some(result) = pending.next().await {
                    let _ = took.record(result?.as_nanos().max(1) as u64);
                }
                Ok(())
            }
        }
    }
}

/// A connection that receives. Each variant holds its client so the connection
/// stays open while the subscription is read.
/// One value per receiver task, never moved in a hot loop: size differences
/// between variants do not matter.
#[allow(dead_code, clippy::large_enum_variant)]
pub enum Receiver {
    /// Tern broadcast subscription.
    Tern(Client, Subscription),
    /// Tern queue consumer (acks each delivery).
    TernQueue(Client, QueueSubscription),
    /// NATS core subscription.
    #[cfg(feature = "nats")]
    Nats(async_nats::Client, async_nats::Subscriber),
    /// NATS JetStream pull consumer (acks each message).
    #[cfg(feature = "nats")]
    NatsQueue(
        async_nats::Client,
        async_nats::jetstream::consumer::pull::Stream,
    ),
    /// Length-prefixed frames from a socket.
    Frames(FramedRead<TcpStream, LengthDelimitedCodec>),
    /// RabbitMQ consumer (acks each delivery).
    #[cfg(feature = "rabbitmq")]
    RabbitQueue(super::rabbitmq::RabbitConsumer),
    /// Many Tern subscriptions on one connection (`--filtered`), read together.
    Merged(
        Client,
        futures_util::stream::SelectAll<super::filtered::PayloadStream>,
    ),
}

/// A received payload: shared bytes, or the Tern message that carries it (taken
/// as it is, without a reference count for a payload slice).
pub enum Payload {
    /// Bytes received.
    Shared(Bytes),
    /// A Tern message.
    Tern(tern_client::Message),
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(bytes) => bytes,
            Payload::Tern(message) => message.payload(),
        }
    }
}

impl Receiver {
    /// The next payload; `None` when the connection ended. Queue receivers ack it.
    pub async fn next(&mut self) -> anyhow::Result<Option<Payload>> {
        match self {
            Receiver::Tern(_, subscription) => Ok(subscription.next().await.map(Payload::Tern)),
            Receiver::TernQueue(_, subscription) => match subscription.next().await {
                Some(delivery) => {
                    delivery
                        .ack()
                        .await
                        .map_err(|error| anyhow!("ack: {error}"))?;
                    Ok(Some(Payload::Tern(delivery.into_message())))
                }
                None => Ok(None),
            },
            #[cfg(feature = "nats")]
            Receiver::Nats(_, subscriber) => Ok(subscriber
                .next()
                .await
                .map(|message| Payload::Shared(message.payload))),
            #[cfg(feature = "nats")]
            Receiver::NatsQueue(_, messages) => match messages.next().await {
                Some(Ok(message)) => {
                    message
                        .ack()
                        .await
                        .map_err(|error| anyhow!("ack: {error}"))?;
                    Ok(Some(Payload::Shared(message.payload.clone())))
                }
                Some(Err(error)) => Err(anyhow!("jetstream: {error}")),
                None => Ok(None),
            },
            Receiver::Frames(frames) => match frames.next().await {
                Some(frame) => Ok(Some(Payload::Shared(frame?.freeze()))),
                None => Ok(None),
            },
            Receiver::Merged(_, merged) => Ok(futures_util::StreamExt::next(merged).await),
            #[cfg(feature = "rabbitmq")]
            Receiver::RabbitQueue(consumer) => Ok(consumer.next().await?.map(Payload::Shared)),
        }
    }

    /// The next payload if one is already waiting (`None`: it would wait). Cheaper
    /// than polling [`Receiver::next`] once: that future spans every variant.
    pub fn try_next(&mut self) -> Option<anyhow::Result<Option<Payload>>> {
        match self {
            Receiver::Tern(_, subscription) => subscription
                .try_next()
                .map(|message| Ok(Some(Payload::Tern(message)))),
            #[cfg(feature = "nats")]
            Receiver::Nats(_, subscriber) => subscriber
                .next()
                .now_or_never()
                .map(|message| Ok(message.map(|message| Payload::Shared(message.payload)))),
            Receiver::Frames(frames) => frames.next().now_or_never().map(|frame| match frame {
                Some(frame) => Ok(Some(Payload::Shared(frame?.freeze()))),
                None => Ok(None),
            }),
            Receiver::Merged(_, merged) => {
                futures_util::StreamExt::next(merged).now_or_never().map(Ok)
            }
            // Their `next` awaits the ack: polling it once and dropping it could
            // lose a delivery already taken off the stream.
            #[cfg(feature = "rabbitmq")]
            Receiver::RabbitQueue(_) => None,
            #[cfg(feature = "nats")]
            Receiver::NatsQueue(..) => None,
            _ => self.next().now_or_never(),
        }
    }

    /// Messages the broker reported as dropped for this receiver (Tern's LAGGED).
    pub fn reported_missed(&self) -> u64 {
        match self {
            Receiver::Tern(_, subscription) => subscription.missed(),
            _ => 0,
        }
    }
}

/// A JetStream work-queue stream for the queue workload (file storage when
/// `durable`, else memory).
#[cfg(feature = "nats")]
pub async fn nats_work_queue(url: &str, subject: &str, durable: bool) -> anyhow::Result<()> {
    use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
    let client = nats_client(url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let _ = jetstream.delete_stream("TERN_BENCH").await;
    jetstream
        .create_stream(Config {
            name: "TERN_BENCH".to_owned(),
            subjects: vec![subject.to_owned()],
            retention: RetentionPolicy::WorkQueue,
            storage: if durable {
                StorageType::File
            } else {
                StorageType::Memory
            },
            ..Default::default()
        })
        .await
        .map_err(|error| {
            anyhow!("create JetStream stream: {error} (is JetStream enabled? nats-server -js)")
        })?;
    Ok(())
}

/// Connects a publisher whose publishes are confirmed by the broker (queue workload),
/// `window` of them in flight. `queue` and `durable` are for RabbitMQ, which
/// publishes to the queue itself (persistent messages when `durable`).
pub async fn confirmed_publisher(
    target: &Target,
    window: usize,
    queue: &str,
    durable: bool,
) -> anyhow::Result<Publisher> {
    let _ = (queue, durable);
    let confirmer = match target {
        Target::Tern(address) => Confirmer::Tern(tern_client(address, "tern-bench-pub").await?),
        #[cfg(feature = "nats")]
        Target::Nats(url) => {
            Confirmer::JetStream(async_nats::jetstream::new(nats_client(url).await?))
        }
        #[cfg(not(feature = "nats"))]
        Target::Nats(_) => return no_nats(),
        #[cfg(feature = "rabbitmq")]
        Target::Amqp(url) => Confirmer::Rabbit(
            super::rabbitmq::RabbitPublisher::connect(url, queue, true, durable).await?,
        ),
        #[cfg(not(feature = "rabbitmq"))]
        Target::Amqp(_) => return no_rabbitmq(),
        Target::Direct | Target::Relay(_) => bail!("the direct and relay ceilings have no queues"),
    };
    Ok(Publisher::Confirmed(
        confirmer,
        Pending::new(),
        window.max(1),
        super::tracker::latency_histogram(),
    ))
}

/// Connects a fire-and-forget publisher for the queue workload (RabbitMQ publishes
/// to the queue itself; the others to the subject the queue is bound to).
pub async fn queue_publisher(
    target: &Target,
    queue: &str,
    durable: bool,
) -> anyhow::Result<Publisher> {
    let _ = (queue, durable);
    match target {
        #[cfg(feature = "rabbitmq")]
        Target::Amqp(url) => Ok(Publisher::Rabbit(
            super::rabbitmq::RabbitPublisher::connect(url, queue, false, durable).await?,
        )),
        _ => publisher(target, None).await,
    }
}

/// Connects a publisher.
pub async fn publisher(target: &Target, direct: Option<TcpStream>) -> anyhow::Result<Publisher> {
    match target {
        Target::Tern(address) => Ok(Publisher::Tern(
            tern_client(address, "tern-bench-pub").await?,
        )),
        #[cfg(feature = "nats")]
        Target::Nats(url) => Ok(Publisher::Nats(nats_client(url).await?)),
        #[cfg(not(feature = "nats"))]
        Target::Nats(_) => no_nats(),
        Target::Amqp(_) => bail!("RabbitMQ is measured on the queue workload only"),
        Target::Direct => {
            let socket = direct.ok_or_else(|| anyhow!("direct: no socket"))?;
            Ok(Publisher::Frames(
                socket,
                BytesMut::with_capacity(FRAME_WRITE_BYTES * 2),
            ))
        }
        Target::Relay(address) => {
            let socket = TcpStream::connect(address)
                .await
                .with_context(|| format!("cannot connect to the relay at {address}"))?;
            socket.set_nodelay(true)?;
            Ok(Publisher::Frames(
                socket,
                BytesMut::with_capacity(FRAME_WRITE_BYTES * 2),
            ))
        }
    }
}

/// What a receiver subscribes to.
#[derive(Debug, Clone, Copy)]
pub enum Subscribe<'a> {
    /// Every message on the subject.
    Broadcast,
    /// Competing consumers with acks and a prefetch window.
    Queue {
        /// Queue (Tern) or durable consumer (NATS) name.
        name: &'a str,
        /// Most unacked messages per consumer.
        prefetch: u32,
    },
}

/// Connects and subscribes a receiver; it is ready when this returns.
pub async fn receiver(
    target: &Target,
    subject: &str,
    mode: Subscribe<'_>,
    direct: Option<TcpStream>,
) -> anyhow::Result<Receiver> {
    let frames = |socket: TcpStream| {
        Receiver::Frames(FramedRead::new(
            socket,
            LengthDelimitedCodec::builder()
                .max_frame_length(16 * 1024 * 1024)
                .new_codec(),
        ))
    };
    match (target, mode) {
        (Target::Tern(address), Subscribe::Broadcast) => {
            let client = tern_client(address, "tern-bench-sub").await?;
            let subscription = client
                .subscribe(subject)
                .await
                .map_err(|error| anyhow!("subscribe: {error}"))?;
            Ok(Receiver::Tern(client, subscription))
        }
        (Target::Tern(address), Subscribe::Queue { name, prefetch }) => {
            let client = tern_client(address, "tern-bench-consumer").await?;
            let subscription = client
                .queue_subscribe_bound(name, subject, prefetch)
                .await
                .map_err(|error| anyhow!("queue subscribe: {error}"))?;
            Ok(Receiver::TernQueue(client, subscription))
        }
        #[cfg(feature = "nats")]
        (Target::Nats(url), Subscribe::Broadcast) => {
            let client = nats_client(url).await?;
            let subscriber = client.subscribe(subject.to_owned()).await?;
            client.flush().await?;
            Ok(Receiver::Nats(client, subscriber))
        }
        #[cfg(feature = "nats")]
        (Target::Nats(url), Subscribe::Queue { name, prefetch }) => {
            use async_nats::jetstream::consumer::{pull, AckPolicy};
            let client = nats_client(url).await?;
            let jetstream = async_nats::jetstream::new(client.clone());
            let stream = jetstream
                .get_stream("TERN_BENCH")
                .await
                .map_err(|error| anyhow!("JetStream stream: {error}"))?;
            let consumer = stream
                .get_or_create_consumer(
                    name,
                    pull::Config {
                        durable_name: Some(name.to_owned()),
                        ack_policy: AckPolicy::Explicit,
                        max_ack_pending: i64::from(prefetch),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|error| anyhow!("JetStream consumer: {error}"))?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(prefetch as usize)
                .messages()
                .await
                .map_err(|error| anyhow!("JetStream pull: {error}"))?;
            Ok(Receiver::NatsQueue(client, messages))
        }
        #[cfg(not(feature = "nats"))]
        (Target::Nats(_), _) => no_nats(),
        (Target::Direct, Subscribe::Broadcast) => {
            Ok(frames(direct.ok_or_else(|| anyhow!("direct: no socket"))?))
        }
        (Target::Relay(address), Subscribe::Broadcast) => {
            let socket = TcpStream::connect(address)
                .await
                .with_context(|| format!("cannot connect to the relay at {address}"))?;
            socket.set_nodelay(true)?;
            Ok(frames(socket))
        }
        (Target::Direct | Target::Relay(_), Subscribe::Queue { .. }) => {
            bail!("the direct and relay ceilings have no queues")
        }
        #[cfg(feature = "rabbitmq")]
        (Target::Amqp(url), Subscribe::Queue { name, prefetch }) => Ok(Receiver::RabbitQueue(
            super::rabbitmq::RabbitConsumer::connect(url, name, prefetch).await?,
        )),
        #[cfg(not(feature = "rabbitmq"))]
        (Target::Amqp(_), Subscribe::Queue { .. }) => no_rabbitmq(),
        (Target::Amqp(_), Subscribe::Broadcast) => {
            bail!("RabbitMQ is measured on the queue workload only")
        }
    }
}

/// A requester or responder connection for the request/reply workload.
pub enum Rpc {
    /// Tern.
    Tern(Client),
    /// NATS.
    #[cfg(feature = "nats")]
    Nats(async_nats::Client),
}

impl Rpc {
    /// Connects.
    pub async fn connect(target: &Target) -> anyhow::Result<Rpc> {
        match target {
            Target::Tern(address) => Ok(Rpc::Tern(tern_client(address, "tern-bench-rpc").await?)),
            #[cfg(feature = "nats")]
            Target::Nats(url) => Ok(Rpc::Nats(nats_client(url).await?)),
            #[cfg(not(feature = "nats"))]
            Target::Nats(_) => no_nats(),
            Target::Direct | Target::Relay(_) => bail!("request/reply needs a broker"),
            Target::Amqp(_) => bail!("RabbitMQ is measured on the queue workload only"),
        }
    }

    /// One request; returns the reply payload.
    pub async fn request(
        &self,
        subject: &str,
        payload: &[u8],
        wait: Duration,
    ) -> anyhow::Result<Bytes> {
        match self {
            Rpc::Tern(client) => client
                .request(subject, payload, wait)
                .await
                .map(|reply| reply.payload_bytes())
                .map_err(|error| anyhow!("request: {error}")),
            #[cfg(feature = "nats")]
            Rpc::Nats(client) => {
                let reply = tokio::time::timeout(
                    wait,
                    client.request(subject.to_owned(), Bytes::copy_from_slice(payload)),
                )
                .await
                .map_err(|_| anyhow!("request timed out"))?
                .map_err(|error| anyhow!("request: {error}"))?;
                Ok(reply.payload)
            }
        }
    }

    /// Answers every request on `subject` (in queue group `group`) by echoing it,
    /// until the connection ends. Signals `ready` once subscribed.
    pub async fn serve_echo(
        self,
        subject: &str,
        group: &str,
        ready: tokio::sync::oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        match self {
            Rpc::Tern(client) => {
                let mut requests = client
                    .queue_subscribe_bound(group, subject, 256)
                    .await
                    .map_err(|error| anyhow!("responder subscribe: {error}"))?;
                let _ = ready.send(());
                while let Some(delivery) = requests.next().await {
                    client
                        .respond(delivery.message(), delivery.message().payload())
                        .await
                        .map_err(|error| anyhow!("respond: {error}"))?;
                    delivery
                        .ack()
                        .await
                        .map_err(|error| anyhow!("ack: {error}"))?;
                }
                Ok(())
            }
            #[cfg(feature = "nats")]
            Rpc::Nats(client) => {
                let mut requests = client
                    .queue_subscribe(subject.to_owned(), group.to_owned())
                    .await?;
                client.flush().await?;
                let _ = ready.send(());
                while let Some(request) = requests.next().await {
                    if let Some(reply) = request.reply {
                        client.publish(reply, request.payload).await?;
                    }
                }
                Ok(())
            }
        }
    }
}
