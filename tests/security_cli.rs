//! Security end to end with the real binary: `tern auth token`, a `tern serve`
//! with TLS, `AUTH_FILE`, an HTTP token and HTTPS, the CLI's `--token` and
//! `--tls-*` flags, `tern health` with the HTTP token, a SIGHUP reload that revokes
//! a token, and startup refusing a bad auth file with exit 2 naming `AUTH_FILE`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::Pki;
use common::{spawn_server, wait_for_ready_line, TERN};

fn make_token() -> (String, String) {
    let output = Command::new(TERN)
        .args(["auth", "token"])
        .output()
        .expect("tern auth token");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let mut lines = text.lines();
    let token = lines.next().expect("token line").to_owned();
    let line = lines.next().expect("hash line").to_owned();
    (token, line)
}

#[test]
fn auth_token_prints_a_token_and_its_hash_line() {
    let (token, line) = make_token();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    let expected = format!("token_sha256 = \"{}\"", common::token_sha256(&token));
    assert_eq!(line, expected);
    assert_ne!(make_token().0, token, "each token is new");
}

#[test]
fn a_bad_auth_file_stops_startup_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("auth.toml");
    std::fs::write(
        &file,
        "[[users]]\nname = \"a\"\ncert_identity = \"a\"\npublsh = {}\n",
    )
    .expect("write");
    let file = file.display().to_string();
    let stderr = common::serve_and_fail(&[("AUTH_FILE", &file)]);
    assert!(
        stderr.contains("AUTH_FILE") && stderr.contains("publsh"),
        "{stderr}"
    );
}

struct Run {
    status: bool,
    stdout: String,
    stderr: String,
}

fn tern(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let output = Command::new(TERN)
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run tern");
    Run {
        status: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn the_cli_speaks_tls_with_tokens_and_sighup_revokes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "cli");
    let server = pki.server("server");
    let (alice_token, alice_line) = make_token();
    let (bob_token, bob_line) = make_token();
    let users = |with_bob: bool| {
        let mut text = format!(
            "[[users]]\nname = \"alice\"\n{alice_line}\npublish = {{ allow = [\"news.>\"] }}\nsubscribe = {{ allow = [\"news.>\"] }}\n"
        );
        if with_bob {
            text.push_str(&format!(
                "[[users]]\nname = \"bob\"\n{bob_line}\npublish = {{ allow = [\"news.>\"] }}\n"
            ));
        }
        text
    };
    let auth_file = dir.path().join("auth.toml");
    std::fs::write(&auth_file, users(true)).expect("auth file");
    let http_token = "http-token-0123456789abcdef";
    let http_token_file = dir.path().join("http-token");
    std::fs::write(&http_token_file, format!("{http_token}\n")).expect("http token");
    let (cert, key, auth, http) = (
        server.cert.display().to_string(),
        server.key.display().to_string(),
        auth_file.display().to_string(),
        http_token_file.display().to_string(),
    );
    let mut child = spawn_server(&[
        ("TLS_CERT_FILE", &cert),
        ("TLS_KEY_FILE", &key),
        ("AUTH_FILE", &auth),
        ("HTTP_AUTH_TOKEN_FILE", &http),
        ("HTTP_TLS", "true"),
    ]);
    let (tcp, http_address, _log) = wait_for_ready_line(&mut child);
    let ca = pki.ca_file.display().to_string();
    let tls: Vec<(&str, &str)> = vec![
        ("TERN_SERVER", &tcp),
        ("TERN_TLS_CA", &ca),
        ("TERN_TLS_SERVER_NAME", "localhost"),
    ];

    // A subscriber and a publisher over TLS, each with its token.
    let mut subscriber = Command::new(TERN)
        .args(["sub", "news.*", "--count", "1", "--token", &alice_token])
        .envs(tls.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sub");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let published = tern(
            &["pub", "news.today", "over tls", "--confirm"],
            &[tls.clone(), vec![("TERN_TOKEN", &bob_token)]].concat(),
        );
        assert!(published.status, "{}", published.stderr);
        if let Ok(Some(_)) = subscriber.try_wait() {
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber got nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = subscriber.wait_with_output().expect("sub output");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "over tls");

    // Permissions: alice may not publish outside news.>.
    let refused = tern(
        &[
            "pub",
            "weather.today",
            "x",
            "--confirm",
            "--token",
            &alice_token,
        ],
        &tls,
    );
    assert!(!refused.status);
    assert!(
        refused.stderr.contains("PERMISSION_DENIED"),
        "{}",
        refused.stderr
    );
    // Without TLS flags against the TLS port: told why.
    let plain = tern(
        &["pub", "news.x", "y", "--token", &alice_token, "-s", &tcp],
        &[],
    );
    assert!(!plain.status);
    assert!(plain.stderr.contains("TLS_REQUIRED"), "{}", plain.stderr);

    // HTTPS: probes open, /metrics needs the token.
    let port = http_address.rsplit(':').next().expect("port").to_owned();
    let health = |path: &str, token: Option<&str>| {
        let mut args = vec![
            "health",
            "--http-port",
            &port,
            "--host",
            "localhost",
            "--https",
            "--tls-ca",
            &ca,
            "--path",
            path,
        ];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        tern(&args, &[])
    };
    let ready = health("/ready", None);
    assert!(ready.status, "{}", ready.stderr);
    let metrics = health("/metrics", None);
    assert!(!metrics.status);
    assert!(metrics.stderr.contains("401"), "{}", metrics.stderr);
    let metrics = health("/metrics", Some(http_token));
    assert!(metrics.status, "{}", metrics.stderr);
    assert!(
        metrics.stdout.contains("tern_auth_failures_total"),
        "metrics served"
    );

    // SIGHUP after removing bob: his token no longer works, alice's still does.
    std::fs::write(&auth_file, users(false)).expect("rewrite");
    let hangup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hangup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = tern(&["pub", "news.x", "y", "--token", &bob_token], &tls);
        if !attempt.status {
            assert!(
                attempt.stderr.contains("AUTHENTICATION_FAILED"),
                "{}",
                attempt.stderr
            );
            break;
        }
        assert!(Instant::now() < deadline, "bob was not revoked");
        std::thread::sleep(Duration::from_millis(100));
    }
    let alice = tern(
        &["pub", "news.x", "y", "--confirm", "--token", &alice_token],
        &tls,
    );
    assert!(alice.status, "{}", alice.stderr);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exit");
    assert!(status.success());
}

/// `tern bench` over mutual TLS, the user named by its client certificate: every
/// message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "bench");
    let server = pki.server("server");
    let client = pki.client("client", "bench.client");
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        "[[users]]\nname = \"bench\"\ncert_identity = \"bench.client\"\npublish = { allow = [\">\"] }\nsubscribe = { allow = [\">\"] }\n",
    )
    .expect("auth file");
    let (cert, key, ca) = (server.cert.clone(), server.key.clone(), pki.ca_file.clone());
    let broker = common::TestBroker::with(move |config| {
        config.tls_cert_file.0 = Some(cert);
        config.tls_key_file.0 = Some(key);
        config.tls_client_ca_file.0 = Some(ca);
        config.auth_file.0 = Some(auth);
    })
    .await;
    let target = format!("tern://{}", broker.address());
    let (ca, cert, key) = (
        pki.ca_file.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(TERN)
            .args([
                "bench",
                "pubsub",
                "--msgs",
                "2000",
                "--json",
                "--target",
                &target,
                "--tls-ca",
                &ca,
                "--tls-server-name",
                "localhost",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ])
            .output()
            .expect("run tern bench")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["delivered"], 2000);
    assert_eq!(report["lost"], 0);
}
