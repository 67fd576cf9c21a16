//! `tern bench`: measures a broker the way `nats bench` does, and checks delivery
//! while it measures.
//!
//! Every payload carries a stamp (publisher, sequence number, send time), so each
//! receiver reports latency percentiles from an HDR histogram and counts lost,
//! duplicated and out-of-order messages. Workloads:
//! - `pubsub`: P publishers → S subscribers on one subject (broadcast);
//! - `queue`: P publishers → C competing consumers on one queue, acking each delivery;
//! - `req`: N requesters doing request/reply round trips against R responders;
//! - any of the first two at a fixed rate (`--rate`) for latency under a given load.
//!
//! Targets: a Tern broker (`--server`, or `--embedded` to start one in this process
//! on port 0), a NATS server (`--target nats://…`, `nats` feature), and the bare
//! ceilings `--target direct` (one TCP connection straight to the reader) and
//! `--target relay://…` (a `tern relay` process copying frames between sockets).

mod filtered;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod report;
mod target;
mod tracker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use report::Report;
use target::{Publisher, Receiver, Rpc, Subscribe, Target};
use tracker::{latency_histogram, write_stamp, Tracker, STAMP_BYTES};

/// How long receivers wait for more after the publishers finished before counting
/// what is missing as lost.
const SETTLE: Duration = Duration::from_secs(3);

/// The workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// P publishers → S subscribers, broadcast (every subscriber gets every message).
    Pubsub,
    /// P publishers → C competing consumers on one queue, with acks and a prefetch.
    Queue,
    /// N requesters → R responders, request/reply round trips.
    Req,
}

/// Arguments of `tern bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Workload
    #[arg(value_enum)]
    pub mode: Mode,
    /// Broker address (host:port); ignored with --embedded or --target
    #[arg(short = 's', long = "server", env = "TERN_SERVER", default_value = super::DEFAULT_SERVER)]
    pub server: String,
    /// Start a broker inside this process on 127.0.0.1, port 0
    #[arg(long)]
    pub embedded: bool,
    /// Instead of a Tern broker: nats://HOST:PORT, relay://HOST:PORT or direct
    #[arg(long)]
    pub target: Option<String>,
    /// Payload bytes per message (at least 20: the stamp)
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Publishers (pubsub, queue)
    #[arg(short = 'p', long = "pubs", default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers (pubsub)
    #[arg(long = "subs", default_value_t = 1)]
    pub subscribers: usize,
    /// Competing consumers (queue)
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Concurrent requesters (req)
    #[arg(long, default_value_t = 1)]
    pub requesters: usize,
    /// Responders (req)
    #[arg(long, default_value_t = 1)]
    pub responders: usize,
    /// Messages per publisher (or requests per requester); 0 = run for --duration
    #[arg(short = 'n', long = "msgs", default_value_t = 0)]
    pub messages: u64,
    /// Seconds to publish for when --msgs is 0
    #[arg(short = 'd', long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unacked deliveries per queue consumer (queue)
    #[arg(long, default_value_t = 256)]
    pub prefetch: u32,
    /// Header filters: this many subscriptions (or queue consumers), each filtered to
    /// its own device_id, spread over --subs / --consumers connections; each publish
    /// is for one pseudo-random device (0 = no filters)
    #[arg(long, default_value_t = 0)]
    pub filtered: usize,
    /// Total publish rate in msgs/s across publishers (0 = as fast as possible)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Subject to use (default: bench.MODE.RANDOM, fresh for every run)
    #[arg(long)]
    pub subject: Option<String>,
    /// Queue: confirmed publishes in flight per publisher (Tern PUBLISH_OK, JetStream
    /// PubAck, RabbitMQ publisher confirms); 0 = fire-and-forget publishers
    #[arg(long, default_value_t = 1024)]
    pub confirm_window: usize,
    /// Queue: durable peers — JetStream file storage, a durable RabbitMQ queue with
    /// persistent messages (a Tern broker's durability is its own STORE_URL)
    #[arg(long)]
    pub durable: bool,
    /// Speak TLS to the broker (Tern or NATS), trusting the CAs in this PEM file
    #[arg(long = "tls-ca")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Name the broker's certificate must carry (Tern; default: the host of the address)
    #[arg(long = "tls-server-name")]
    pub tls_server_name: Option<String>,
    /// Client certificate (PEM) for brokers that require mutual TLS
    #[arg(long = "tls-cert", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long = "tls-key", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Token for a broker with authentication (Tern AUTH_FILE, NATS --auth)
    #[arg(long = "token", env = "TERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the report as JSON (no progress line)
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    target::set_security(target::Security {
        tls_ca: args.tls_ca.clone(),
        tls_server_name: args.tls_server_name.clone(),
        client_certificate: args.tls_cert.clone().zip(args.tls_key.clone()),
        token: args.token.clone(),
    });
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.promises_delivery
        && (report.lost > 0 || report.duplicated > 0 || report.out_of_order > 0)
    {
        bail!(
            "delivery check failed: {} lost, {} duplicated, {} out of order",
            report.lost,
            report.duplicated,
            report.out_of_order
        );
    }
    Ok(())
}

/// Runs the benchmark and returns its report.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.size < STAMP_BYTES {
        bail!("--size must be at least {STAMP_BYTES} bytes (the sequence/timestamp stamp)");
    }
    if args.duration <= 0.0 && args.messages == 0 {
        bail!("give --msgs N or a positive --duration");
    }
    let embedded = if args.embedded && args.target.is_none() {
        Some(EmbeddedBroker::start().await?)
    } else {
        None
    };
    let target = match (&embedded, &args.target) {
        (Some(broker), _) => Target::Tern(broker.address.clone()),
        (None, Some(text)) => Target::parse(text)?,
        (None, None) => Target::Tern(args.server.clone()),
    };
    // A fresh subject per run: a queue (or JetStream stream) left bound to the
    // subject of an earlier run must not take a share of this run's messages.
    let mut args = args.clone();
    let run_id = fastrand::u32(..);
    let subject = args.subject.clone().unwrap_or_else(|| {
        let mode = match args.mode {
            Mode::Pubsub => "pubsub",
            Mode::Queue => "queue",
            Mode::Req => "req",
        };
        format!("bench.{mode}.{run_id:08x}")
    });
    args.subject = Some(subject);
    let report = match args.mode {
        Mode::Pubsub | Mode::Queue => stream_workload(&args, &target, run_id).await,
        Mode::Req => request_workload(&args, &target, run_id).await,
    };
    if let Some(broker) = embedded {
        broker.stop().await;
    }
    report
}

/// A broker started inside the benchmark process.
struct EmbeddedBroker {
    address: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tern_broker::ServerError>>,
}

impl EmbeddedBroker {
    async fn start() -> anyhow::Result<EmbeddedBroker> {
        let config = tern_broker::Config {
            bind_addr: std::net::Ipv4Addr::LOCALHOST.into(),
            tcp_port: 0,
            http_port: 0,
            max_consumers: 100_000,
            ..tern_broker::Config::default()
        };
        let server = tern_broker::Server::bind(config).await?;
        let address = server.tcp_addr().to_string();
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));
        Ok(EmbeddedBroker {
            address,
            stop,
            task,
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    published: AtomicU64,
    /// Per receiver: messages received so far (each written by one task only).
    delivered: Vec<Arc<AtomicU64>>,
}

impl Progress {
    fn delivered(&self) -> u64 {
        self.delivered
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }
}

fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Messages due by `elapsed` for a publisher of `rate` msgs/s (0: unpaced).
fn due(rate: f64, elapsed: Duration) -> u64 {
    if rate > 0.0 {
        (elapsed.as_secs_f64() * rate) as u64 + 1
    } else {
        u64::MAX
    }
}

async fn publish_loop(
    mut publisher: Publisher,
    index: u32,
    args: BenchArgs,
    epoch: Instant,
    progress: Arc<Progress>,
) -> anyhow::Result<(u64, Duration, Option<hdrhistogram::Histogram<u64>>)> {
    let subject = args.subject.clone().unwrap_or_default();
    let devices = filtered::device_names(args.filtered);
    let mut payload = vec![0x5a_u8; args.size];
    let rate = args.rate as f64 / args.publishers.max(1) as f64;
    let deadline = Duration::try_from_secs_f64(args.duration).unwrap_or(Duration::from_secs(5));
    let started = Instant::now();
    let mut sequence = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let elapsed = started.elapsed();
        let limit = if args.messages > 0 {
            args.messages
        } else if elapsed >= deadline {
            break;
        } else {
            u64::MAX
        };
        if sequence >= limit {
            break;
        }
        let due = due(rate, elapsed).min(limit);
        if sequence >= due {
            tick.tick().await;
            continue;
        }
        // At most 256 messages between clock reads for the deadline: keeps the
        // clock off the hot path and a paced publisher from bursting.
        let batch_end = due.min(sequence + 256);
        let batch = batch_end - sequence;
        let mut sent_ns = 0;
        while sequence < batch_end {
            // The send time is read every 16 messages: at these rates they leave
            // within a microsecond of each other, and the clock is not free.
            if sequence.is_multiple_of(16) || sent_ns == 0 {
                sent_ns = now_ns(epoch);
            }
            write_stamp(&mut payload, index, sequence, sent_ns);
            let header = (!devices.is_empty()).then(|| {
                let device = filtered::device_for(index, sequence, devices.len());
                (filtered::DEVICE_HEADER, devices[device].as_str())
            });
            publisher.publish(&subject, header, &payload).await?;
            sequence += 1;
        }
        publisher.end_batch().await?;
        progress.published.fetch_add(batch, Ordering::Relaxed);
    }
    publisher.flush().await?;
    let elapsed = started.elapsed();
    Ok((sequence, elapsed, publisher.confirm_latency().cloned()))
}

/// Messages a receiver takes without waiting between two reads of the clock.
const RECEIVE_CLOCK_EVERY: u32 = 8;

async fn receive_loop(
    mut receiver: Receiver,
    publishers: usize,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<(Tracker, u64, Option<Instant>)> {
    let mut tracker = Tracker::new(publishers);
    let mut last_ns = None;
    let mut now = 0;
    let mut since_clock = 0u32;
    loop {
        // A message already waiting is taken without the select; the select (and
        // the stop signal) is for when the receiver would wait.
        let (next, waited) = match receiver.try_next() {
            Some(next) => (next?, false),
            None => tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = receiver.next() => (next?, true),
            },
        };
        let Some(payload) = next else { break };
        // The receive time is read after every wait and every RECEIVE_CLOCK_EVERY
        // messages taken without waiting: those arrived together, within a few
        // microseconds, and the clock is not free. It serves both the latency and
        // the end time.
        if waited || since_clock == 0 {
            now = now_ns(epoch);
            since_clock = RECEIVE_CLOCK_EVERY;
        }
        since_clock -= 1;
        tracker.record(&payload, now);
        last_ns = Some(now);
        delivered.store(tracker.received, Ordering::Relaxed);
    }
    let missed = receiver.reported_missed();
    let last = last_ns.map(|ns| epoch + Duration::from_nanos(ns));
    Ok((tracker, missed, last))
}

async fn stream_workload(args: &BenchArgs, target: &Target, run_id: u32) -> anyhow::Result<Report> {
    let subject = args.subject.clone().unwrap_or_default();
    let queue_name = format!("bench-{run_id:08x}");
    let queue = args.mode == Mode::Queue;
    let receiver_count = if queue {
        args.consumers
    } else {
        args.subscribers
    };
    if matches!(target, Target::Direct | Target::Relay(_))
        && (args.publishers != 1 || receiver_count != 1)
    {
        bail!("the direct and relay ceilings measure one publisher to one receiver");
    }
    #[cfg(feature = "nats")]
    if let (Target::Nats(url), true) = (target, queue) {
        target::nats_work_queue(url, &subject, args.durable).await?;
    }
    #[cfg(feature = "rabbitmq")]
    if let (Target::Amqp(url), true) = (target, queue) {
        rabbitmq::declare_queue(url, &queue_name, args.durable).await?;
    }
    let (mut direct_publisher, mut direct_receiver) = if *target == Target::Direct {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (connected, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let publisher = connected?;
        publisher.set_nodelay(true)?;
        (Some(publisher), Some(accepted?.0))
    } else {
        (None, None)
    };
    let mode = if queue {
        Subscribe::Queue {
            name: &queue_name,
            prefetch: args.prefetch,
        }
    } else {
        Subscribe::Broadcast
    };

    // Receivers first, so nothing published is missed.
    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let mut progress = Progress::default();
    let mut receivers = JoinSet::new();
    let mut connected = Vec::with_capacity(receiver_count);
    if args.filtered > 0 {
        let queue = queue.then_some((queue_name.as_str(), args.prefetch));
        connected = filtered::receivers(target, &subject, queue, receiver_count, args.filtered)
            .await
            .context("connect the filtered receivers")?;
    } else {
        for _ in 0..receiver_count {
            connected.push(
                target::receiver(target, &subject, mode, direct_receiver.take())
                    .await
                    .context("connect a receiver")?,
            );
        }
    }
    let receiver_count = connected.len();
    for receiver in connected {
        let delivered = Arc::new(AtomicU64::new(0));
        progress.delivered.push(delivered.clone());
        receivers.spawn(receive_loop(
            receiver,
            args.publishers,
            epoch,
            delivered,
            stop.clone(),
        ));
    }
    let mut publishers = Vec::with_capacity(args.publishers);
    for _ in 0..args.publishers {
        let publisher = if queue && args.confirm_window > 0 {
            target::confirmed_publisher(target, args.confirm_window, &queue_name, args.durable)
                .await
        } else if queue {
            target::queue_publisher(target, &queue_name, args.durable).await
        } else {
            target::publisher(target, direct_publisher.take()).await
        };
        publishers.push(publisher.context("connect a publisher")?);
    }

    let progress = Arc::new(progress);
    let bar = report::progress_bar(args.json);
    let ticker = report::spawn_progress(bar.clone(), progress.clone());
    let publish_started = Instant::now();
    let mut publishing = JoinSet::new();
    for (index, publisher) in publishers.into_iter().enumerate() {
        publishing.spawn(publish_loop(
            publisher,
            index as u32,
            args.clone(),
            epoch,
            progress.clone(),
        ));
    }
    let mut published = 0;
    let mut publish_time = Duration::ZERO;
    let mut confirm_latency: Option<hdrhistogram::Histogram<u64>> = None;
    while let Some(result) = publishing.join_next().await {
        let (count, elapsed, confirms) = result.context("publisher task")??;
        published += count;
        publish_time = publish_time.max(elapsed);
        if let Some(confirms) = confirms {
            match &mut confirm_latency {
                Some(all) => {
                    let _ = all.add(&confirms);
                }
                None => confirm_latency = Some(confirms),
            }
        }
    }
    let expected = if queue || args.filtered > 0 {
        published
    } else {
        published * receiver_count as u64
    };
    // Wait until everything arrived, or nothing more arrived for SETTLE.
    let mut seen = progress.delivered();
    let mut quiet_since = Instant::now();
    while seen < expected && quiet_since.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = progress.delivered();
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
    }
    stop.cancel();
    let mut trackers = Vec::new();
    let mut reported_missed = 0;
    let mut last_receive: Option<Instant> = None;
    while let Some(result) = receivers.join_next().await {
        let (tracker, missed, last) = result.context("receiver task")??;
        reported_missed += missed;
        last_receive = last_receive.max(last);
        trackers.push(tracker);
    }
    ticker.abort();
    bar.finish_and_clear();
    let delivery_time = last_receive.map_or(publish_time, |last| {
        last.saturating_duration_since(publish_started)
    });
    Ok(Report::stream(
        args,
        target,
        &trackers,
        queue,
        published,
        publish_time,
        delivery_time,
        reported_missed,
        confirm_latency.as_ref(),
    ))
}

async fn request_workload(
    args: &BenchArgs,
    target: &Target,
    run_id: u32,
) -> anyhow::Result<Report> {
    // A fresh responder group per run: a queue keeps the subject it was bound to.
    let group = format!("bench-responders-{run_id:08x}");
    let mut responders = JoinSet::new();
    for _ in 0..args.responders {
        let rpc = Rpc::connect(target).await?;
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let subject = args.subject.clone().unwrap_or_default();
        let group = group.clone();
        responders.spawn(async move { rpc.serve_echo(&subject, &group, ready).await });
        if subscribed.await.is_err() {
            let error = match responders.join_next().await {
                Some(Ok(Err(error))) => error,
                _ => anyhow!("the responder ended before subscribing"),
            };
            return Err(error.context("a responder failed to subscribe"));
        }
    }
    let epoch = Instant::now();
    let progress = Arc::new(Progress::default());
    let bar = report::progress_bar(args.json);
    let ticker = report::spawn_progress(bar.clone(), progress.clone());
    let deadline = Duration::try_from_secs_f64(args.duration).unwrap_or(Duration::from_secs(5));
    let started = Instant::now();
    let mut requesters = JoinSet::new();
    for index in 0..args.requesters {
        let rpc = Rpc::connect(target).await?;
        let args = args.clone();
        let progress = progress.clone();
        requesters.spawn(async move {
            let subject = args.subject.clone().unwrap_or_default();
            let mut payload = vec![0x5a_u8; args.size];
            let mut histogram = latency_histogram();
            let mut sent = 0u64;
            let mut failed = 0u64;
            while if args.messages > 0 {
                sent < args.messages
            } else {
                started.elapsed() < deadline
            } {
                let sent_ns = now_ns(epoch);
                write_stamp(&mut payload, index as u32, sent, sent_ns);
                match rpc
                    .request(&subject, &payload, Duration::from_secs(5))
                    .await
                {
                    Ok(reply) if reply[..] == payload[..] => {
                        let _ = histogram.record(now_ns(epoch).saturating_sub(sent_ns).max(1));
                    }
                    Ok(_) | Err(_) => failed += 1,
                }
                sent += 1;
                progress.published.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((sent, failed, histogram))
        });
    }
    let mut sent = 0;
    let mut failed = 0;
    let mut histogram = latency_histogram();
    while let Some(result) = requesters.join_next().await {
        let (count, failures, latency) = result.context("requester task")??;
        sent += count;
        failed += failures;
        let _ = histogram.add(&latency);
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    responders.abort_all();
    Ok(Report::requests(
        args, target, sent, failed, elapsed, &histogram,
    ))
}
