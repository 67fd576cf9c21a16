//! TLS on the protocol listener, with real certificates (rcgen) and real
//! handshakes over loopback: pub/sub and queues over TLS; a wrong CA, an expired
//! certificate, a hostname mismatch and a plaintext client all refused cleanly;
//! mutual TLS required and mapped to an `AUTH_FILE` user; certificates reloaded
//! while connections stay up.

mod common;

use std::time::Duration;

use common::certs::{Issued, Pki};
use common::{within, RawClient, TestBroker};
use tern_client::{Client, ClientError, ClientOptions, ReconnectPolicy, TlsOptions};
use tern_proto::{ErrorCode, Frame, Role};

struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    server: Issued,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "tern-test");
    let server = pki.server("server");
    Setup { dir, pki, server }
}

async fn tls_broker(server: &Issued, client_ca: Option<&std::path::Path>) -> TestBroker {
    let (cert, key) = (server.cert.clone(), server.key.clone());
    let client_ca = client_ca.map(ToOwned::to_owned);
    TestBroker::with(move |config| {
        config.tls_cert_file.0 = Some(cert);
        config.tls_key_file.0 = Some(key);
        config.tls_client_ca_file.0 = client_ca;
    })
    .await
}

fn options(tls: TlsOptions) -> ClientOptions {
    ClientOptions::default()
        .tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .reconnect(ReconnectPolicy::disabled())
}

fn trusting(pki: &Pki) -> TlsOptions {
    TlsOptions::default()
        .ca_file(&pki.ca_file)
        .server_name("localhost")
}

async fn connect(broker: &TestBroker, tls: TlsOptions) -> Result<Client, ClientError> {
    Client::connect_with(broker.address(), options(tls)).await
}

fn assert_tls_refused(result: Result<Client, ClientError>, what: &str) -> String {
    match result {
        Err(ClientError::Tls { message }) => message,
        Err(other) => panic!("{what}: expected a TLS error, got {other}"),
        Ok(_) => panic!("{what}: connected"),
    }
}

#[tokio::test]
async fn pub_sub_and_queues_work_over_tls() {
    let setup = setup();
    let broker = tls_broker(&setup.server, None).await;
    let client = connect(&broker, trusting(&setup.pki))
        .await
        .expect("TLS connect");
    let mut subscription = client.subscribe("tls.>").await.expect("subscribe");
    let mut queue = client
        .queue_subscribe("tls.work", 10)
        .await
        .expect("queue subscribe");
    for n in 0..100 {
        client
            .publish("tls.event", format!("{n}"))
            .await
            .expect("publish");
    }
    client
        .publish_confirmed("tls.work", vec![7u8; 200_000])
        .await
        .expect("confirmed over TLS");
    for n in 0..100 {
        let message = within("a broadcast delivery", subscription.next())
            .await
            .expect("message");
        assert_eq!(message.payload(), format!("{n}").as_bytes());
    }
    let delivery = within("a queue delivery", queue.next())
        .await
        .expect("delivery");
    assert_eq!(delivery.payload().len(), 200_000);
    delivery.ack().await.expect("ack");
    let reply = client
        .request("nobody.here", "x", Duration::from_secs(5))
        .await;
    assert!(matches!(reply, Err(ClientError::NoResponders { .. })));
    client.close().await;
}

#[tokio::test]
async fn wrong_ca_expired_certificate_and_wrong_name_are_refused() {
    let setup = setup();
    let broker = tls_broker(&setup.server, None).await;
    let other = Pki::new(&setup.dir.path().join("other"), "other");
    let message = assert_tls_refused(connect(&broker, trusting(&other)).await, "wrong CA");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    let message = assert_tls_refused(
        connect(
            &broker,
            TlsOptions::default()
                .ca_file(&setup.pki.ca_file)
                .server_name("not-the-broker.example"),
        )
        .await,
        "wrong name",
    );
    assert!(
        message.contains("NotValidForName") || message.contains("name"),
        "{message}"
    );
    broker.shutdown().await;

    let expired = setup.pki.expired_server("expired");
    let broker = tls_broker(&expired, None).await;
    let message = assert_tls_refused(connect(&broker, trusting(&setup.pki)).await, "expired");
    assert!(
        message.contains("Expired") || message.contains("expired"),
        "{message}"
    );
}

#[tokio::test]
async fn a_plaintext_client_on_the_tls_port_is_told_and_closed() {
    let setup = setup();
    let broker = tls_broker(&setup.server, None).await;
    let mut raw = RawClient::connect(&broker).await;
    match raw.hello_with_token(Role::Both, "").await {
        Frame::Error(error) => {
            assert_eq!(error.code, ErrorCode::TlsRequired.as_u16());
            assert!(error.message.contains("TLS"), "{}", error.message);
        }
        other => panic!("expected TLS_REQUIRED, got {other:?}"),
    }
    raw.expect_closed().await;
    // The SDK without TLS reports it as a handshake refusal.
    let plain = Client::connect_with(
        broker.address(),
        ClientOptions::default().reconnect(ReconnectPolicy::disabled()),
    )
    .await;
    assert!(
        matches!(&plain, Err(ClientError::Handshake { code, .. }) if *code == ErrorCode::TlsRequired.as_u16()),
        "{:?}",
        plain.err()
    );
    // A TLS client still works.
    let client = connect(&broker, trusting(&setup.pki))
        .await
        .expect("TLS connect");
    client.flush().await.expect("round trip");
}

#[tokio::test]
async fn mutual_tls_is_required_and_identifies_the_user() {
    let setup = setup();
    let alice = setup.pki.client("alice", "alice.prod");
    let expired = setup.pki.expired_client("old", "alice.prod");
    let stranger_pki = Pki::new(&setup.dir.path().join("stranger"), "stranger");
    let stranger = stranger_pki.client("mallory", "alice.prod");
    let auth_file = setup.dir.path().join("auth.toml");
    std::fs::write(
        &auth_file,
        r#"
[[users]]
name = "alice"
cert_identity = "alice.prod"
publish = { allow = ["alice.>"] }
subscribe = { allow = ["alice.>"] }
"#,
    )
    .expect("auth file");
    let (cert, key, ca) = (
        setup.server.cert.clone(),
        setup.server.key.clone(),
        setup.pki.ca_file.clone(),
    );
    let broker = TestBroker::with(move |config| {
        config.tls_cert_file.0 = Some(cert);
        config.tls_key_file.0 = Some(key);
        config.tls_client_ca_file.0 = Some(ca);
        config.auth_file.0 = Some(auth_file);
    })
    .await;
    // No certificate, an expired one, one from another CA: all refused.
    for (what, tls) in [
        ("no certificate", trusting(&setup.pki)),
        (
            "expired certificate",
            trusting(&setup.pki).client_certificate(&expired.cert, &expired.key),
        ),
        (
            "another CA's certificate",
            trusting(&setup.pki).client_certificate(&stranger.cert, &stranger.key),
        ),
    ] {
        let result = connect(&broker, tls).await;
        assert!(result.is_err(), "{what}: connected");
    }
    // Alice's certificate names her: her permissions apply.
    let client = connect(
        &broker,
        trusting(&setup.pki).client_certificate(&alice.cert, &alice.key),
    )
    .await
    .expect("mutual TLS");
    let mut mine = client.subscribe("alice.inbox").await.expect("allowed");
    client.publish("alice.inbox", "hi").await.expect("allowed");
    assert_eq!(
        within("delivery", mine.next())
            .await
            .expect("message")
            .payload(),
        b"hi"
    );
    let refused = client.publish_confirmed("bob.inbox", "x").await;
    assert!(
        matches!(&refused, Err(ClientError::Refused { code, .. }) if *code == ErrorCode::PermissionDenied.as_u16()),
        "{:?}",
        refused.err()
    );
    assert!(
        broker
            .broker
            .security()
            .stats()
            .tls_handshake_failures
            .get()
            >= 2
    );
}

#[tokio::test]
async fn certificates_reload_while_connections_stay_up() {
    let setup = setup();
    // The broker reads its certificate from fixed paths that are rewritten.
    let cert = setup.dir.path().join("live.pem");
    let key = setup.dir.path().join("live-key.pem");
    std::fs::copy(&setup.server.cert, &cert).expect("copy");
    std::fs::copy(&setup.server.key, &key).expect("copy");
    let live = Issued {
        cert: cert.clone(),
        key: key.clone(),
    };
    let broker = tls_broker(&live, None).await;
    let before = connect(&broker, trusting(&setup.pki))
        .await
        .expect("connect");
    let mut subscription = before.subscribe("reload.>").await.expect("subscribe");

    // Rotate to a certificate from a new CA.
    let rotated_pki = Pki::new(&setup.dir.path().join("rotated"), "rotated");
    let rotated = rotated_pki.server("server");
    std::fs::copy(&rotated.cert, &cert).expect("copy");
    std::fs::copy(&rotated.key, &key).expect("copy");
    broker.broker.reload_security();
    // New handshakes get the new certificate; the old session keeps working.
    assert_tls_refused(
        connect(&broker, trusting(&setup.pki)).await,
        "old CA after rotation",
    );
    let after = connect(&broker, trusting(&rotated_pki))
        .await
        .expect("new CA");
    after.publish("reload.x", "across").await.expect("publish");
    assert_eq!(
        within("delivery", subscription.next())
            .await
            .expect("message")
            .payload(),
        b"across"
    );
    before
        .publish("reload.y", "old session")
        .await
        .expect("publish");
    assert_eq!(
        within("delivery", subscription.next())
            .await
            .expect("message")
            .payload(),
        b"old session"
    );

    // A bad new certificate is logged and the current one kept.
    std::fs::write(&cert, "not a certificate").expect("write");
    broker.broker.reload_security();
    assert_eq!(broker.broker.security().stats().reloads_failed.get(), 1);
    let still = connect(&broker, trusting(&rotated_pki))
        .await
        .expect("still the rotated certificate");
    still.flush().await.expect("round trip");
}

#[tokio::test]
async fn a_missing_key_or_an_unreadable_certificate_stops_startup_naming_the_setting() {
    let setup = setup();
    let mut config = common::test_config();
    config.tls_cert_file.0 = Some(setup.server.cert.clone());
    let error = tern_broker::Server::bind(config.clone())
        .await
        .expect_err("no key");
    assert!(error.to_string().contains("TLS_KEY_FILE"), "{error}");
    config.tls_key_file.0 = Some(setup.dir.path().join("missing.pem"));
    let error = tern_broker::Server::bind(config.clone())
        .await
        .expect_err("missing key file");
    assert!(error.to_string().contains("TLS_KEY_FILE"), "{error}");
    config.tls_key_file.0 = Some(setup.server.key.clone());
    config.tls_cert_file.0 = Some(setup.server.key.clone());
    let error = tern_broker::Server::bind(config)
        .await
        .expect_err("a key as certificate");
    assert!(error.to_string().contains("TLS_CERT_FILE"), "{error}");
}

/// A slow TLS subscriber, like a slow plaintext one, loses nothing: its writer reads
/// the TCP socket's send queue under the TLS session, so flow control sees it make
/// progress (tests/abuse.rs has the plaintext cases). 16 KiB of plaintext every
/// 20 ms, about 0.8 MB/s, for 3 s, then fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tls_subscriber_loses_nothing() {
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MESSAGES: usize = 250_000;
    let setup = setup();
    let broker = tls_broker(&setup.server, None).await;
    let tcp = tokio::net::TcpStream::connect(broker.tcp)
        .await
        .expect("connect");
    let mut subscriber = trusting(&setup.pki)
        .connect(&broker.address(), tcp)
        .await
        .expect("TLS handshake");
    let hello = Frame::Hello(tern_proto::Hello {
        version: 1,
        role: Role::Consumer,
        client_name: "slow-tls".into(),
        auth_token: "".into(),
    });
    for frame in [hello, common::subscribe(1, "slow")] {
        subscriber
            .write_all(&frame.to_bytes().expect("encodes"))
            .await
            .expect("write");
    }
    subscriber.flush().await.expect("flush");
    let mut buffer = BytesMut::with_capacity(1 << 20);
    let mut subscribed = false;
    while !subscribed {
        assert!(subscriber.read_buf(&mut buffer).await.expect("read") > 0);
        while let Some(frame) = tern_proto::codec::decode(&mut buffer, 1 << 20).expect("valid") {
            subscribed |= matches!(frame, Frame::SubscribeOk { sid: 1 });
        }
    }
    let publisher = connect(&broker, trusting(&setup.pki))
        .await
        .expect("publisher");
    let publishing = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            publisher
                .publish("slow", "12345678")
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
        publisher
    });
    let (mut delivered, mut lagged) = (0usize, 0u64);
    let mut chunk = vec![0u8; 1 << 20];
    let slow_until = tokio::time::Instant::now() + Duration::from_secs(3);
    within("the slow TLS reader gets every message", async {
        while delivered < MESSAGES && lagged == 0 {
            let slow = tokio::time::Instant::now() < slow_until;
            let limit = if slow { 16 * 1024 } else { chunk.len() };
            let read = subscriber.read(&mut chunk[..limit]).await.expect("read");
            assert!(read > 0, "the broker closed the subscriber");
            buffer.extend_from_slice(&chunk[..read]);
            while let Some(frame) = tern_proto::codec::decode(&mut buffer, 64 << 20).expect("valid")
            {
                match frame {
                    Frame::Deliver(_) => delivered += 1,
                    Frame::Lagged { missed, .. } => lagged += missed,
                    _ => {}
                }
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
    assert_eq!(
        (delivered, lagged),
        (MESSAGES, 0),
        "every message, none dropped"
    );
    within("the publisher finishes", publishing)
        .await
        .expect("publisher");
    assert_eq!(broker.broker.stats().snapshot().dropped_slow_consumer, 0);
}

/// Connections that never finish their TLS handshake are bounded like connections:
/// with `MAX_CONNECTIONS` of them waiting, the next is closed at once (not after the
/// handshake timeout), and a finished handshake frees room again.
#[tokio::test]
async fn unfinished_tls_handshakes_are_bounded_by_the_connection_limit() {
    use tokio::io::AsyncReadExt;
    let setup = setup();
    let (cert, key) = (setup.server.cert.clone(), setup.server.key.clone());
    let broker = TestBroker::with(move |config| {
        config.tls_cert_file.0 = Some(cert);
        config.tls_key_file.0 = Some(key);
        config.max_connections = 2;
        config.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(
            tokio::net::TcpStream::connect(broker.tcp)
                .await
                .expect("connect"),
        );
    }
    // The accept loop takes connections in order and reserves each one's
    // handshake before it accepts the next: the third finds no room.
    let mut third = tokio::net::TcpStream::connect(broker.tcp)
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte))
        .await
        .expect("closed at once, not after the 30 s handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(
        broker
            .broker
            .security()
            .stats()
            .tls_handshake_failures
            .get(),
        1
    );
    drop(silent);
    // Room again: a real client connects.
    let client = within("room again", async {
        loop {
            match connect(&broker, trusting(&setup.pki)).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    client.flush().await.expect("round trip");
}
