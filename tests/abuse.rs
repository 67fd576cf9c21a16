//! What a client — slow, careless or hostile — cannot do to the others. Each test is
//! one thing a client tries (or fails to do) and what everybody else still gets;
//! together they read as the broker's list of protections (README, "Limits and
//! protection"). Related cases pinned elsewhere: one connection cannot take every
//! subscription slot (`protocol.rs`), a stuck subscriber stays under its byte bound
//! (`delivery.rs`), every publish sent before shutdown is answered and the listen
//! backlog holds bursts (`lifecycle.rs`).

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{within, TestBroker};
use tern_proto::{codec, Frame, Hello, Message, Publish, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a slow subscriber reads its socket.
#[derive(Debug, Clone, Copy)]
enum ReadPattern {
    /// `bytes` per read call, then a pause of `every`.
    Steady { bytes: usize, every: Duration },
    /// Everything the socket holds, then a pause of `every`.
    Bursts { every: Duration },
}

async fn hello(stream: &mut TcpStream, role: Role) {
    let hello = Frame::Hello(Hello {
        version: 1,
        role,
        client_name: "abuse".into(),
        auth_token: "".into(),
    });
    stream
        .write_all(&hello.to_bytes().expect("encodes"))
        .await
        .expect("write");
}

/// Counts DELIVER and LAGGED frames in `buffer`, leaving a partial frame in it.
fn count_frames(buffer: &mut BytesMut, delivered: &mut usize, lagged: &mut u64) {
    while let Some(frame) = codec::decode(buffer, 64 << 20).expect("valid frames") {
        match frame {
            Frame::Deliver(_) => *delivered += 1,
            Frame::Lagged { missed, .. } => *lagged += missed,
            _ => {}
        }
    }
}

/// How long the subscriber reads slowly before it reads at full speed to the end:
/// long enough for the broker's send buffer to fill and for several stall periods
/// to pass (the loss this guards against showed within two seconds).
const SLOW_PHASE: Duration = Duration::from_secs(3);

/// Small messages, as many as fill every kernel buffer on the way (the broker's
/// send buffer autotunes up to 4 MiB): 250,000 frames of 30 bytes.
const MESSAGES: usize = 250_000;

/// Issue 13, finding 1: a broadcast subscriber that keeps reading, however slowly
/// its reads come, loses nothing, and its publisher is slowed instead. A publisher
/// pipelines [`MESSAGES`] small messages as fast as TCP takes them (8-byte payloads:
/// one 256 KiB read of them is ~9,000 frames, far more than the buffer); the
/// subscriber reads by `pattern` for [`SLOW_PHASE`] on a real socket with default
/// kernel buffers, then fast, and counts what it got.
async fn slow_reader_loses_nothing(pattern: ReadPattern) {
    let messages = MESSAGES;
    let broker = TestBroker::start().await;
    let mut subscriber = TcpStream::connect(broker.tcp).await.expect("connect");
    hello(&mut subscriber, Role::Consumer).await;
    subscriber
        .write_all(&common::subscribe(1, "slow").to_bytes().expect("encodes"))
        .await
        .expect("write");
    let mut buffer = BytesMut::with_capacity(1 << 20);
    let mut delivered = 0;
    let mut lagged = 0;
    // WELCOME, then SUBSCRIBE_OK: the subscription is routable.
    let mut subscribed = false;
    while !subscribed {
        assert!(subscriber.read_buf(&mut buffer).await.expect("read") > 0);
        while let Some(frame) = codec::decode(&mut buffer, 1 << 20).expect("valid") {
            subscribed |= matches!(frame, Frame::SubscribeOk { sid: 1 });
        }
    }

    let publish = Frame::Publish(Publish {
        sequence: 0,
        message: Message::new("slow", "12345678").expect("valid"),
    })
    .to_bytes()
    .expect("encodes");
    let mut publisher = TcpStream::connect(broker.tcp).await.expect("connect");
    hello(&mut publisher, Role::Producer).await;
    let publishing = tokio::spawn(async move {
        let batch: Vec<u8> = publish.repeat(1000);
        for _ in 0..messages / 1000 {
            publisher.write_all(&batch).await.expect("publish");
        }
        publisher
    });

    let mut chunk = vec![0u8; 1 << 20];
    let slow_until = tokio::time::Instant::now() + SLOW_PHASE;
    within("the slow reader gets every message", async {
        while delivered < messages && lagged == 0 {
            if tokio::time::Instant::now() >= slow_until {
                let read = subscriber.read(&mut chunk).await.expect("read");
                assert!(read > 0, "the broker closed the subscriber");
                buffer.extend_from_slice(&chunk[..read]);
                count_frames(&mut buffer, &mut delivered, &mut lagged);
                continue;
            }
            match pattern {
                ReadPattern::Steady { bytes, every } => {
                    let read = subscriber.read(&mut chunk[..bytes]).await.expect("read");
                    assert!(read > 0, "the broker closed the subscriber");
                    buffer.extend_from_slice(&chunk[..read]);
                    tokio::time::sleep(every).await;
                }
                ReadPattern::Bursts { every } => {
                    let read = subscriber.read(&mut chunk).await.expect("read");
                    assert!(read > 0, "the broker closed the subscriber");
                    buffer.extend_from_slice(&chunk[..read]);
                    while let Ok(read) = subscriber.try_read(&mut chunk) {
                        if read == 0 {
                            break;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                    }
                    tokio::time::sleep(every).await;
                }
            }
            count_frames(&mut buffer, &mut delivered, &mut lagged);
        }
    })
    .await;
    assert_eq!(
        (delivered, lagged),
        (messages, 0),
        "{pattern:?}: every message delivered, none dropped"
    );
    within("the publisher finishes", publishing)
        .await
        .expect("publisher");
    assert_eq!(broker.broker.stats().snapshot().dropped_slow_consumer, 0);
}

/// 16 KiB every 20 ms, ~0.8 MB/s: the rate that lost 37 % of its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_800_kb_per_second_loses_nothing() {
    let pattern = ReadPattern::Steady {
        bytes: 16 * 1024,
        every: Duration::from_millis(20),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// 32 KiB every 20 ms, ~1.6 MB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_1600_kb_per_second_loses_nothing() {
    let pattern = ReadPattern::Steady {
        bytes: 32 * 1024,
        every: Duration::from_millis(20),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// 8 KiB every 20 ms, ~400 KB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_400_kb_per_second_loses_nothing() {
    let pattern = ReadPattern::Steady {
        bytes: 8 * 1024,
        every: Duration::from_millis(20),
    };
    slow_reader_loses_nothing(pattern).await;
}

/// Empties its socket, then sleeps 300 ms: bursts with long silences between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_reads_in_bursts_every_300_ms_loses_nothing() {
    let pattern = ReadPattern::Bursts {
        every: Duration::from_millis(300),
    };
    slow_reader_loses_nothing(pattern).await;
}
