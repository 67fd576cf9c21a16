//! The benchmark's report: a table for people, JSON for scripts, and the live
//! progress line while it runs.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::target::Target;
use super::tracker::Tracker;
use super::{BenchArgs, Progress};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: histogram.len(),
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / 1000.0,
        }
    }
}

/// The result of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `pubsub`, `queue` or `req`.
    pub mode: &'static str,
    /// What was measured.
    pub target: String,
    /// Payload bytes.
    pub size: usize,
    /// Publishers (or requesters).
    pub publishers: usize,
    /// Subscribers, consumers (or responders).
    pub receivers: usize,
    /// Target publish rate, msgs/s (0 = unpaced).
    pub rate: u64,
    /// Messages published (or requests sent).
    pub published: u64,
    /// Deliveries received (or replies).
    pub delivered: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Seconds the publishers ran.
    pub publish_seconds: f64,
    /// Seconds from the first publish to the last delivery.
    pub delivery_seconds: f64,
    /// Messages published per second.
    pub publish_rate: f64,
    /// Deliveries per second, all receivers together.
    pub delivered_per_sec: f64,
    /// Payload megabytes (10^6) delivered per second.
    pub delivered_mb_per_sec: f64,
    /// Publish-to-delivery latency (request round trip for `req`).
    pub latency: Latency,
    /// Publish-to-confirmation latency (confirmed queue publishers only).
    pub confirm_latency: Option<Latency>,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Of the lost, how many the broker reported dropping (LAGGED).
    pub reported_dropped: u64,
    /// Deliveries of a message already received (or, for queues, received by
    /// another consumer too).
    pub duplicated: u64,
    /// Deliveries that arrived after a later message of the same publisher.
    pub out_of_order: u64,
    /// Whether the mode promises every message (lost/duplicated/out-of-order must be 0).
    pub promises_delivery: bool,
}

impl Report {
    /// A pubsub or queue report.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stream(
        args: &BenchArgs,
        target: &Target,
        trackers: &[Tracker],
        queue: bool,
        published: u64,
        publish_time: Duration,
        delivery_time: Duration,
        reported_dropped: u64,
        confirm_latency: Option<&Histogram<u64>>,
    ) -> Report {
        // With --filtered each message has one receiver, as with a queue; several
        // devices' streams share a receiver there, so order is only per device and
        // is not checked across the merged stream.
        let competing = queue || args.filtered > 0;
        let (delivered, unique, duplicated, out_of_order, histogram) = if competing {
            let merged = Tracker::merge_competing(trackers);
            (
                merged.received,
                merged.unique(),
                merged.duplicated,
                merged.out_of_order,
                merged.latency,
            )
        } else {
            let mut histogram = super::tracker::latency_histogram();
            for tracker in trackers {
                let _ = histogram.add(&tracker.latency);
            }
            (
                trackers.iter().map(|t| t.received).sum(),
                trackers.iter().map(Tracker::unique).sum(),
                trackers.iter().map(|t| t.duplicated).sum(),
                trackers.iter().map(|t| t.out_of_order).sum(),
                histogram,
            )
        };
        let out_of_order = if args.filtered > 0 { 0 } else { out_of_order };
        let expected = if competing {
            published
        } else {
            published * trackers.len() as u64
        };
        let seconds = delivery_time.as_secs_f64().max(1e-9);
        Report {
            mode: if queue { "queue" } else { "pubsub" },
            target: target.label(),
            size: args.size,
            publishers: args.publishers,
            receivers: trackers.len(),
            rate: args.rate,
            published,
            delivered,
            expected,
            publish_seconds: publish_time.as_secs_f64(),
            delivery_seconds: seconds,
            publish_rate: published as f64 / publish_time.as_secs_f64().max(1e-9),
            delivered_per_sec: delivered as f64 / seconds,
            delivered_mb_per_sec: (delivered as f64 * args.size as f64) / seconds / 1e6,
            latency: Latency::of(&histogram),
            confirm_latency: confirm_latency.map(Latency::of),
            lost: expected.saturating_sub(unique),
            reported_dropped,
            duplicated,
            out_of_order,
            // Broadcast to a subscriber that keeps up, and queues, promise every
            // message; the report still shows drops the broker admitted (LAGGED).
            promises_delivery: queue || reported_dropped == 0,
        }
    }

    /// A request/reply report.
    pub(super) fn requests(
        args: &BenchArgs,
        target: &Target,
        sent: u64,
        failed: u64,
        elapsed: Duration,
        histogram: &Histogram<u64>,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let answered = sent - failed;
        Report {
            mode: "req",
            target: target.label(),
            size: args.size,
            publishers: args.requesters,
            receivers: args.responders,
            rate: 0,
            published: sent,
            delivered: answered,
            expected: sent,
            publish_seconds: seconds,
            delivery_seconds: seconds,
            publish_rate: sent as f64 / seconds,
            delivered_per_sec: answered as f64 / seconds,
            delivered_mb_per_sec: answered as f64 * args.size as f64 / seconds / 1e6,
            latency: Latency::of(histogram),
            confirm_latency: None,
            lost: failed,
            reported_dropped: 0,
            duplicated: 0,
            out_of_order: 0,
            promises_delivery: true,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let (senders, receivers) = match self.mode {
            "req" => ("requesters", "responders"),
            "queue" => ("publishers", "consumers"),
            _ => ("publishers", "subscribers"),
        };
        let rate = if self.rate > 0 {
            format!(", paced at {} msgs/s", self.rate)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "tern bench {} against {}: {} {senders} → {} {receivers}, {} B payloads{rate}",
            self.mode, self.target, self.publishers, self.receivers, self.size
        );
        let row = |out: &mut String, name: &str, value: String| {
            let _ = writeln!(out, "  {name:<22} {value}");
        };
        row(
            &mut out,
            "published",
            format!(
                "{} in {:.2} s ({:.0} msgs/s)",
                self.published, self.publish_seconds, self.publish_rate
            ),
        );
        row(
            &mut out,
            "delivered",
            format!(
                "{} of {} expected in {:.2} s",
                self.delivered, self.expected, self.delivery_seconds
            ),
        );
        row(
            &mut out,
            "throughput",
            format!(
                "{:.0} msgs/s, {:.1} MB/s",
                self.delivered_per_sec, self.delivered_mb_per_sec
            ),
        );
        let latency = &self.latency;
        row(
            &mut out,
            if self.mode == "req" {
                "round trip (µs)"
            } else {
                "latency (µs)"
            },
            format!(
                "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                latency.p50_us, latency.p90_us, latency.p99_us, latency.p999_us, latency.max_us
            ),
        );
        if let Some(confirm) = &self.confirm_latency {
            row(
                &mut out,
                "confirm (µs)",
                format!(
                    "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                    confirm.p50_us, confirm.p90_us, confirm.p99_us, confirm.p999_us, confirm.max_us
                ),
            );
        }
        row(
            &mut out,
            "lost / dup / reordered",
            format!(
                "{} / {} / {}{}",
                self.lost,
                self.duplicated,
                self.out_of_order,
                if self.reported_dropped > 0 {
                    format!(
                        "  ({} dropped by the broker for slow subscribers, reported with LAGGED)",
                        self.reported_dropped
                    )
                } else {
                    String::new()
                }
            ),
        );
        out
    }
}

/// The live progress line (hidden with `--json` or when stderr is not a terminal).
pub(super) fn progress_bar(json: bool) -> ProgressBar {
    let target = if json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr_with_hz(4)
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

/// Updates the progress line four times a second until aborted.
pub(super) fn spawn_progress(
    bar: ProgressBar,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = (0u64, 0u64);
        loop {
            tick.tick().await;
            let now = (
                progress.published.load(Ordering::Relaxed),
                progress.delivered(),
            );
            bar.set_message(format!(
                "published {} ({:.0}/s)  delivered {} ({:.0}/s)",
                now.0,
                (now.0 - last.0) as f64 * 4.0,
                now.1,
                now.1.saturating_sub(last.1) as f64 * 4.0
            ));
            bar.tick();
            last = now;
        }
    })
}
