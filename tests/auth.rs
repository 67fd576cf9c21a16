//! Authentication and permissions (`AUTH_FILE`): tokens at HELLO (missing, wrong,
//! right), the brute-force delay and throttle, a permission matrix answered on the
//! exact request, `allow_responses`, and reloads that add and revoke rights on open
//! connections. Sessions run over in-memory pipes on paused time (the delay is
//! tested at its production value without waiting), or over TCP with the SDK.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{PipeBroker, RawClient, TestBroker};
use tern_broker::security::DeniedAction;
use tern_proto::{ErrorCode, Frame, Message, Publish, Role};
use tokio::io::DuplexStream;

const ORDERS_TOKEN: &str = "orders-token-0123456789abcdef";
const BILLING_TOKEN: &str = "billing-token-0123456789abcdef";
const RESPONDER_TOKEN: &str = "responder-token-0123456789abc";

fn hash(token: &str) -> String {
    common::token_sha256(token)
}

/// The issue's example user, a billing service, and a responder with no publish
/// rights but `allow_responses`.
fn auth_file(orders_publish: &str) -> String {
    format!(
        r#"
[[users]]
name = "orders-service"
token_sha256 = "{orders}"
publish   = {{ allow = [{orders_publish}], deny = ["orders.internal.>"] }}
subscribe = {{ allow = ["_INBOX.>", "billing.*"] }}
consume   = ["billing"]
allow_responses = true

[[users]]
name = "billing"
token_sha256 = "{billing}"
publish   = {{ allow = ["billing.>"] }}
subscribe = {{ allow = ["billing.>"], deny = ["billing.secret"] }}
consume   = ["billing.*"]
declare   = ["billing.*"]

[[users]]
name = "responder"
token_sha256 = "{responder}"
subscribe = {{ allow = ["svc.*"] }}
allow_responses = true
"#,
        orders = hash(ORDERS_TOKEN),
        billing = hash(BILLING_TOKEN),
        responder = hash(RESPONDER_TOKEN),
    )
}

struct AuthDir {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

fn write_auth(text: &str) -> AuthDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("auth.toml");
    std::fs::write(&file, text).expect("write auth file");
    AuthDir { _dir: dir, file }
}

fn pipe_broker(file: &Path) -> PipeBroker {
    PipeBroker::with(|config| {
        config.auth_file.0 = Some(file.to_owned());
        // Tests sleep past the response permit's lifetime without answering PINGs.
        config.ping_interval = Duration::from_secs(86_400);
    })
}

async fn login(broker: &PipeBroker, token: &str) -> RawClient<DuplexStream> {
    let mut client = broker.connect();
    match client.hello_with_token(Role::Both, token).await {
        Frame::Welcome(_) => client,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn publish(sequence: u64, subject: &str) -> Frame {
    common::publish(sequence, subject)
}

fn request(sequence: u64, subject: &str, reply_to: &str) -> Frame {
    Frame::Publish(Publish {
        sequence,
        message: Message::encode(subject, Some(reply_to), &[], b"question").expect("valid"),
    })
}

async fn expect_publish_error(
    client: &mut RawClient<DuplexStream>,
    sequence: u64,
    code: ErrorCode,
) -> String {
    match client.next_non_ping().await {
        Frame::PublishError(error) if error.sequence == sequence && error.code == code.as_u16() => {
            error.message.to_string()
        }
        other => panic!("expected PUBLISH_ERROR {code} for {sequence}, got {other:?}"),
    }
}

async fn expect_publish_ok(client: &mut RawClient<DuplexStream>, sequence: u64) {
    match client.next_non_ping().await {
        Frame::PublishOk { sequence: got } if got == sequence => {}
        other => panic!("expected PUBLISH_OK {sequence}, got {other:?}"),
    }
}

async fn expect_subscribed(client: &mut RawClient<DuplexStream>, sid: u32) {
    match client.next_non_ping().await {
        Frame::SubscribeOk { sid: got } if got == sid => {}
        other => panic!("expected SUBSCRIBE_OK {sid}, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn missing_and_wrong_tokens_are_refused_after_a_delay_and_closed() {
    let auth = write_auth(&auth_file("\"orders.>\""));
    let broker = pipe_broker(&auth.file);
    for (token, expected) in [("", "requires a token"), ("not-a-token", "names no user")] {
        let mut client = broker.connect();
        let started = tokio::time::Instant::now();
        match client.hello_with_token(Role::Both, token).await {
            Frame::Error(error) => {
                assert_eq!(error.code, ErrorCode::AuthenticationFailed.as_u16());
                assert!(error.message.contains(expected), "{}", error.message);
            }
            other => panic!("expected AUTHENTICATION_FAILED, got {other:?}"),
        }
        assert!(
            started.elapsed() >= tern_broker::security::authenticator::AUTH_FAILURE_DELAY,
            "answered after {:?}",
            started.elapsed()
        );
        client.expect_closed().await;
    }
    let stats = broker.broker.security().stats();
    use tern_broker::security::AuthFailure;
    assert_eq!(stats.auth_failures(AuthFailure::Missing), 1);
    assert_eq!(stats.auth_failures(AuthFailure::Wrong), 1);
    // The right token is let in at once.
    let started = tokio::time::Instant::now();
    let mut client = login(&broker, ORDERS_TOKEN).await;
    assert!(started.elapsed() < Duration::from_millis(10));
    client.expect_alive().await;
}

#[tokio::test(start_paused = true)]
async fn brute_force_from_one_address_is_throttled() {
    let auth = write_auth(&auth_file("\"orders.>\""));
    let broker = pipe_broker(&auth.file);
    let max = tern_broker::security::authenticator::MAX_PENDING_FAILURES_PER_PEER as usize;
    let mut guessing = Vec::new();
    for n in 0..max {
        let mut client = broker.connect();
        client
            .send(&Frame::Hello(tern_proto::Hello {
                version: 1,
                role: Role::Both,
                client_name: "guess".into(),
                auth_token: format!("guess-{n}").into(),
            }))
            .await;
        guessing.push(client);
    }
    // Let every guess reach its delay.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let mut next = broker.connect();
    match next.hello_with_token(Role::Both, ORDERS_TOKEN).await {
        Frame::Error(error) => {
            assert_eq!(error.code, ErrorCode::AuthenticationFailed.as_u16());
            assert!(error.message.contains("too many"), "{}", error.message);
        }
        other => panic!("expected a throttled refusal, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(10),
        "refused at once"
    );
    for mut client in guessing {
        client.expect_error(ErrorCode::AuthenticationFailed).await;
    }
    // Once the delays are over, the right token works again.
    let mut client = login(&broker, ORDERS_TOKEN).await;
    client.expect_alive().await;
    assert_eq!(
        broker
            .broker
            .security()
            .stats()
            .auth_failures(tern_broker::security::AuthFailure::Throttled),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_permission_matrix_is_answered_on_the_exact_request() {
    let auth = write_auth(&auth_file("\"orders.>\""));
    let broker = pipe_broker(&auth.file);
    let mut orders = login(&broker, ORDERS_TOKEN).await;

    // Publish: allowed, denied by the allow list, denied by deny (deny wins).
    orders.send(&publish(1, "orders.created")).await;
    expect_publish_ok(&mut orders, 1).await;
    orders.send(&publish(2, "billing.paid")).await;
    let message = expect_publish_error(&mut orders, 2, ErrorCode::PermissionDenied).await;
    assert!(
        message.contains("billing.paid") && message.contains("orders-service"),
        "{message}"
    );
    orders.send(&publish(3, "orders.internal.audit")).await;
    expect_publish_error(&mut orders, 3, ErrorCode::PermissionDenied).await;
    // Fire-and-forget: an ERROR with context 0 naming the subject.
    orders.send(&publish(0, "secret.x")).await;
    let (context, message) = orders.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(context, 0);
    assert!(message.contains("secret.x"), "{message}");
    // The same denied subject again (a cached decision would be a bug both ways).
    orders.send(&publish(4, "billing.paid")).await;
    expect_publish_error(&mut orders, 4, ErrorCode::PermissionDenied).await;
    orders.send(&publish(5, "orders.created")).await;
    expect_publish_ok(&mut orders, 5).await;

    // Subscribe: a wildcard inside the allowed pattern, one beyond it.
    orders.send(&common::subscribe(1, "billing.*")).await;
    expect_subscribed(&mut orders, 1).await;
    orders.send(&common::subscribe(2, "billing.>")).await;
    let (sid, message) = orders.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(sid, 2);
    assert!(message.contains("billing.>"), "{message}");
    orders.send(&common::subscribe(3, "_INBOX.orders.*")).await;
    expect_subscribed(&mut orders, 3).await;

    // Deny wins for subscriptions: one that could receive the denied subject is
    // refused, a narrower one is not.
    let mut billing = login(&broker, BILLING_TOKEN).await;
    billing.send(&common::subscribe(1, "billing.*")).await;
    let (sid, _) = billing.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(sid, 1);
    billing.send(&common::subscribe(2, "billing.paid")).await;
    expect_subscribed(&mut billing, 2).await;
    billing.send(&common::subscribe(3, "billing.secret")).await;
    billing.expect_error(ErrorCode::PermissionDenied).await;

    // Queues: consume allowed by name, refused by name.
    orders
        .send(&common::queue_subscribe(10, "billing", 10))
        .await;
    expect_subscribed(&mut orders, 10).await;
    orders
        .send(&common::queue_subscribe(11, "shipping", 10))
        .await;
    let (sid, message) = orders.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(sid, 11);
    assert!(message.contains("shipping"), "{message}");
    // Administer: orders-service may not purge billing; billing may purge its own.
    orders
        .send(&Frame::QueuePurge {
            request_id: 7,
            queue: "billing".into(),
        })
        .await;
    let (request, _) = orders.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(request, 7);

    // Every refusal left the connections open and working.
    orders.expect_alive().await;
    billing.expect_alive().await;
    let stats = broker.broker.security().stats();
    assert_eq!(stats.denied(DeniedAction::Publish), 4);
    assert_eq!(stats.denied(DeniedAction::Subscribe), 3);
    assert_eq!(stats.denied(DeniedAction::Consume), 1);
    assert_eq!(stats.denied(DeniedAction::Administer), 1);
}

#[tokio::test(start_paused = true)]
async fn a_responder_answers_each_request_once_without_publish_rights() {
    let auth = write_auth(&auth_file("\"orders.>\", \"svc.>\""));
    let broker = pipe_broker(&auth.file);
    let mut responder = login(&broker, RESPONDER_TOKEN).await;
    responder.send(&common::subscribe(1, "svc.*")).await;
    expect_subscribed(&mut responder, 1).await;
    let mut requester = login(&broker, ORDERS_TOKEN).await;
    requester.send(&common::subscribe(9, "_INBOX.r1.*")).await;
    expect_subscribed(&mut requester, 9).await;

    // Not a request's reply-to: denied.
    responder.send(&publish(1, "_INBOX.r1.a")).await;
    expect_publish_error(&mut responder, 1, ErrorCode::PermissionDenied).await;

    requester
        .send(&request(0, "svc.lookup", "_INBOX.r1.a"))
        .await;
    let Frame::Deliver(deliver) = responder.next_non_ping().await else {
        panic!("expected the request");
    };
    assert_eq!(deliver.message.reply_to(), Some("_INBOX.r1.a"));
    responder.send(&publish(2, "_INBOX.r1.a")).await;
    expect_publish_ok(&mut responder, 2).await;
    let Frame::Deliver(reply) = requester.next_non_ping().await else {
        panic!("expected the reply");
    };
    assert_eq!(reply.message.subject(), "_INBOX.r1.a");
    // Once only.
    responder.send(&publish(3, "_INBOX.r1.a")).await;
    expect_publish_error(&mut responder, 3, ErrorCode::PermissionDenied).await;
    // And within the time limit.
    requester
        .send(&request(0, "svc.lookup", "_INBOX.r1.b"))
        .await;
    assert!(matches!(responder.next_non_ping().await, Frame::Deliver(_)));
    tokio::time::sleep(tern_broker::response_permits::RESPONSE_PERMIT_TTL + Duration::from_secs(1))
        .await;
    responder.send(&publish(4, "_INBOX.r1.b")).await;
    expect_publish_error(&mut responder, 4, ErrorCode::PermissionDenied).await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_adds_and_revokes_rights_on_open_connections() {
    let auth = write_auth(&auth_file("\"orders.>\""));
    let broker = pipe_broker(&auth.file);
    let mut orders = login(&broker, ORDERS_TOKEN).await;
    let mut billing = login(&broker, BILLING_TOKEN).await;
    orders.send(&publish(1, "shipping.sent")).await;
    expect_publish_error(&mut orders, 1, ErrorCode::PermissionDenied).await;
    orders.send(&common::subscribe(1, "billing.*")).await;
    expect_subscribed(&mut orders, 1).await;

    // Grant shipping.>, and drop billing.* from the subscribe rules.
    let granted = auth_file("\"orders.>\", \"shipping.>\"").replace(
        "subscribe = { allow = [\"_INBOX.>\", \"billing.*\"] }",
        "subscribe = { allow = [\"_INBOX.>\"] }",
    );
    std::fs::write(&auth.file, granted).expect("rewrite");
    broker.broker.reload_security();
    // The subscription the new rules do not allow is ended, on its sid.
    let (sid, message) = orders.expect_error(ErrorCode::PermissionDenied).await;
    assert_eq!(sid, 1);
    assert!(message.contains("reloaded"), "{message}");
    orders.send(&publish(2, "shipping.sent")).await;
    expect_publish_ok(&mut orders, 2).await;
    // Nothing published on billing.* reaches it any more.
    billing.send(&publish(1, "billing.paid")).await;
    expect_publish_ok(&mut billing, 1).await;
    orders.expect_alive().await;

    // A file that does not parse changes nothing.
    std::fs::write(&auth.file, "[[users]]\nname = 1\n").expect("rewrite");
    broker.broker.reload_security();
    orders.send(&publish(3, "shipping.sent")).await;
    expect_publish_ok(&mut orders, 3).await;
    assert_eq!(broker.broker.security().stats().reloads_failed.get(), 1);

    // Removing the user disconnects it; the other user stays.
    let without_orders = auth_file("\"orders.>\"");
    let start = without_orders
        .find("[[users]]\nname = \"billing\"")
        .expect("billing entry");
    std::fs::write(&auth.file, &without_orders[start..]).expect("rewrite");
    broker.broker.reload_security();
    let (_, message) = orders.expect_error(ErrorCode::AuthenticationFailed).await;
    assert!(message.contains("orders-service"), "{message}");
    orders.expect_closed().await;
    billing.expect_alive().await;
    // And its token no longer logs in.
    let mut again = broker.connect();
    assert!(matches!(
        again.hello_with_token(Role::Both, ORDERS_TOKEN).await,
        Frame::Error(error) if error.code == ErrorCode::AuthenticationFailed.as_u16()
    ));
}

#[tokio::test(start_paused = true)]
async fn queue_list_shows_only_the_queues_a_user_may_use() {
    let auth = write_auth(&auth_file("\"orders.>\""));
    let broker = pipe_broker(&auth.file);
    let mut billing = login(&broker, BILLING_TOKEN).await;
    billing
        .send(&common::queue_subscribe(1, "billing.invoices", 10))
        .await;
    expect_subscribed(&mut billing, 1).await;
    let mut orders = login(&broker, ORDERS_TOKEN).await;
    orders
        .send(&common::queue_subscribe(1, "billing", 10))
        .await;
    expect_subscribed(&mut orders, 1).await;
    orders.send(&Frame::QueueList { request_id: 1 }).await;
    let mut names = Vec::new();
    loop {
        match orders.next_non_ping().await {
            Frame::QueueInfo(info) => names.push(info.name.to_string()),
            Frame::QueueOk { count, .. } => {
                assert_eq!(count as usize, names.len());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["billing"]);
    // billing may purge its own queue.
    billing
        .send(&Frame::QueuePurge {
            request_id: 2,
            queue: "billing.invoices".into(),
        })
        .await;
    assert!(matches!(
        billing.next_non_ping().await,
        Frame::QueueOk { request_id: 2, .. }
    ));
}

/// Over TCP with the SDK: `ClientOptions::token`, and a refused token surfaces as
/// a handshake error with the documented code.
#[tokio::test]
async fn the_sdk_authenticates_with_a_token() {
    let auth = write_auth(&auth_file("\"orders.>\""));
    let file = auth.file.clone();
    let broker = TestBroker::with(move |config| config.auth_file.0 = Some(file)).await;
    let options = tern_client::ClientOptions::default()
        .token(ORDERS_TOKEN)
        .reconnect(tern_client::ReconnectPolicy::disabled());
    let client = tern_client::Client::connect_with(broker.address(), options)
        .await
        .expect("authenticates");
    let mut subscription = client.subscribe("billing.*").await.expect("allowed");
    client
        .publish("orders.created", "x")
        .await
        .expect("allowed");
    let refused = client
        .publish_confirmed("billing.paid", "x")
        .await
        .expect_err("not allowed");
    assert!(
        matches!(&refused, tern_client::ClientError::Refused { code, .. } if *code == ErrorCode::PermissionDenied.as_u16()),
        "{refused}"
    );
    let refused = client.subscribe("secret.>").await.expect_err("not allowed");
    assert!(refused.to_string().contains("secret.>"), "{refused}");
    let billing = tern_client::Client::connect_with(
        broker.address(),
        tern_client::ClientOptions::default().token(BILLING_TOKEN),
    )
    .await
    .expect("authenticates");
    billing
        .publish("billing.paid", "42")
        .await
        .expect("allowed");
    let delivered = common::within("the delivery", subscription.next())
        .await
        .expect("message");
    assert_eq!(delivered.subject(), "billing.paid");

    let wrong = tern_client::Client::connect_with(
        broker.address(),
        tern_client::ClientOptions::default()
            .token("wrong")
            .reconnect(tern_client::ReconnectPolicy::disabled()),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&wrong, tern_client::ClientError::Handshake { code, .. } if *code == ErrorCode::AuthenticationFailed.as_u16()),
        "{wrong}"
    );
}

/// Request/reply with the documented minimal permissions: the requester may
/// publish requests and subscribe to its inbox (`_INBOX.>`), the responder may only
/// subscribe to the service subject and answer (`allow_responses`).
#[tokio::test]
async fn request_reply_works_with_minimal_permissions() {
    let text = format!(
        r#"
[[users]]
name = "requester"
token_sha256 = "{requester}"
publish   = {{ allow = ["svc.time"] }}
subscribe = {{ allow = ["_INBOX.>"] }}

[[users]]
name = "responder"
token_sha256 = "{responder}"
subscribe = {{ allow = ["svc.*"] }}
allow_responses = true
"#,
        requester = hash(ORDERS_TOKEN),
        responder = hash(RESPONDER_TOKEN),
    );
    let auth = write_auth(&text);
    let file = auth.file.clone();
    let broker = TestBroker::with(move |config| config.auth_file.0 = Some(file)).await;
    let connect = |token: &str| {
        tern_client::Client::connect_with(
            broker.address(),
            tern_client::ClientOptions::default()
                .token(token)
                .reconnect(tern_client::ReconnectPolicy::disabled()),
        )
    };
    let responder = connect(RESPONDER_TOKEN).await.expect("responder");
    let mut requests = responder.subscribe("svc.*").await.expect("subscribe");
    let answering = tokio::spawn(async move {
        for _ in 0..3 {
            let request = requests.next().await.expect("a request");
            responder
                .respond(&request, "noon")
                .await
                .expect("allowed to answer");
        }
        responder
    });
    let requester = connect(ORDERS_TOKEN).await.expect("requester");
    for _ in 0..3 {
        let reply = requester
            .request("svc.time", "?", Duration::from_secs(5))
            .await
            .expect("answered");
        assert_eq!(reply.payload(), b"noon");
    }
    let responder = common::within("the responder", answering)
        .await
        .expect("join");
    // Its rights end at the answers: anything else is refused.
    let refused = responder.publish_confirmed("svc.time", "x").await;
    assert!(refused.is_err());
}
