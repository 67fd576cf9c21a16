//! The protocol spec is complete enough to write a client from it alone: a Python
//! client written from `proto/PROTOCOL.md` (examples/python) passes its smoke test
//! against a real broker. CI provides `python3`.

mod common;

use std::process::Command;

use common::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_written_from_the_spec_in_python_works() {
    let broker = TestBroker::with(|config| config.max_consumers = 100).await;
    run_python("smoke_test.py", vec![broker.address()]).await;
}

/// Runs `examples/python/SCRIPT ARGS` and expects every check to pass.
async fn run_python(script: &str, args: Vec<String>) {
    let script = format!("{}/examples/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).args(args).output()
    })
    .await
    .expect("join")
    .expect("python3 must be installed (CI installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// The same client over TLS with a token: PROTOCOL.md's § 1 and § 5 are enough to
/// add both (`examples/python/smoke_secure.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_speaks_tls_with_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = common::certs::Pki::new(dir.path(), "python");
    let server = pki.server("server");
    let token = "python-token-0123456789abcdef";
    let auth = dir.path().join("auth.toml");
    let hash = common::token_sha256(token);
    std::fs::write(
        &auth,
        format!(
            "[[users]]\nname = \"py\"\ntoken_sha256 = \"{hash}\"\npublish = {{ allow = [\"secure.>\"] }}\nsubscribe = {{ allow = [\"secure.>\"] }}\n"
        ),
    )
    .expect("auth file");
    let (cert, key) = (server.cert.clone(), server.key.clone());
    let broker = TestBroker::with(move |config| {
        config.tls_cert_file.0 = Some(cert);
        config.tls_key_file.0 = Some(key);
        config.auth_file.0 = Some(auth);
    })
    .await;
    let ca = pki.ca_file.display().to_string();
    run_python(
        "smoke_secure.py",
        vec![broker.address(), ca, token.to_owned()],
    )
    .await;
}
