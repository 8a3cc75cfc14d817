//! Tests for TLS-only servers: certificates made by the test (rcgen), mutual
//! TLS required or optional, checked with redis-cli (this crate does not
//! enable the redis crate's TLS features).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cacheme_test_support::{RedisServer, TlsCertificates, TlsClientAuth};

/// Runs redis-cli against `port` with `tls_args`, returns (success, output).
fn cli(port: u16, tls_args: &[&Path], extra: &[&str], command: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-e", "--tls"]);
    let flags = ["--cacert", "--cert", "--key"];
    for (flag, path) in flags.iter().zip(tls_args) {
        cmd.arg(flag).arg(path);
    }
    cmd.args(extra).args(command);
    let output = cmd.output().expect("run redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && !text.contains("ERR"), text)
}

#[test]
fn tls_server_with_required_client_certificates() {
    let server = RedisServer::builder().tls(TlsClientAuth::Required).start();
    let port = server.port();
    assert_ne!(port, 6379);
    assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}/"));
    let tls = server.tls().expect("a TLS server has TLS files");
    assert_eq!(tls.client_auth(), TlsClientAuth::Required);

    // The files are in the server's directory and hold the PEM bytes.
    let dir = server.log_path().parent().expect("dir").to_path_buf();
    for (path, pem) in [
        (tls.ca_cert_path(), tls.ca_cert_pem()),
        (tls.client_cert_path(), tls.client_cert_pem()),
        (tls.client_key_path(), tls.client_key_pem()),
    ] {
        assert!(
            path.starts_with(&dir),
            "{} outside {}",
            path.display(),
            dir.display()
        );
        assert_eq!(std::fs::read(&path).expect("read PEM file"), pem);
    }
    assert!(
        tls.ca_cert_pem()
            .starts_with(b"-----BEGIN CERTIFICATE-----")
    );
    assert!(
        tls.client_key_pem()
            .starts_with(b"-----BEGIN PRIVATE KEY-----")
    );

    // The helper's own redis-cli goes over TLS with the client certificate.
    assert_eq!(server.cli(["PING"]), "PONG");
    assert_eq!(server.cli(["SET", "k", "v"]), "OK");
    assert_eq!(server.cli(["GET", "k"]), "v");

    let (ca, cert, key) = (
        tls.ca_cert_path(),
        tls.client_cert_path(),
        tls.client_key_path(),
    );
    let (ok, out) = cli(port, &[&ca, &cert, &key], &[], &["GET", "k"]);
    assert!(ok && out.trim() == "v", "mutual TLS must work: {out}");
    let (ok, out) = cli(port, &[&ca], &[], &["PING"]);
    assert!(
        !ok,
        "without a client certificate the server must refuse: {out}"
    );

    // A client certificate from another CA is refused, and a client that
    // trusts another CA refuses the server.
    let other = TlsCertificates::generate();
    let other_dir = tempdir("other-ca");
    let other_ca = other_dir.join("ca.crt");
    let other_cert = other_dir.join("client.crt");
    let other_key = other_dir.join("client.key");
    std::fs::write(&other_ca, other.ca_cert_pem()).expect("write");
    std::fs::write(&other_cert, other.client_cert_pem()).expect("write");
    std::fs::write(&other_key, other.client_key_pem()).expect("write");
    let (ok, out) = cli(port, &[&ca, &other_cert, &other_key], &[], &["PING"]);
    assert!(!ok, "a certificate from another CA must be refused: {out}");
    let (ok, out) = cli(port, &[&other_ca, &cert, &key], &[], &["PING"]);
    assert!(
        !ok,
        "the server's certificate must not verify against another CA: {out}"
    );
    let _ = std::fs::remove_dir_all(&other_dir);

    // The plain protocol gets nowhere on the TLS port.
    let plain = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
    let refused = plain
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut con| {
            con.set_read_timeout(Some(Duration::from_secs(2)))?;
            redis::cmd("PING").query::<String>(&mut con)
        });
    assert!(refused.is_err(), "plain RESP must not work on the TLS port");

    // The redis crate's connection is refused with an explanation.
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(server.connection())))
        .expect_err("connection() on a TLS server must panic");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("speaks TLS only"), "got: {message}");
}

#[test]
fn tls_server_with_optional_client_certificates_and_acl_users_survives_a_restart() {
    let certs = TlsCertificates::generate();
    let mut server = RedisServer::builder()
        .tls_certificates(certs.clone())
        .tls(TlsClientAuth::Optional)
        .disable_default_user()
        .acl_user("app", "secret", "~CM:* &CM:* +@all")
        .start();
    let port = server.port();
    let tls = server.tls().expect("tls").clone();
    assert_eq!(
        tls.ca_cert_pem(),
        certs.ca_cert_pem(),
        "the given CA is used"
    );
    assert_eq!(
        server.user_url("app"),
        format!("rediss://app:secret@127.0.0.1:{port}/")
    );
    let ca = tls.ca_cert_path();

    // Optional: no client certificate is fine; the ACL user logs in.
    let app = ["--user", "app", "--pass", "secret", "--no-auth-warning"];
    let (ok, out) = cli(port, &[&ca], &app, &["SET", "CM:k", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(port, &[&ca], &app, &["SET", "other", "1"]);
    assert!(!ok && out.contains("NOPERM"), "outside its keys: {out}");
    let wrong = ["--user", "app", "--pass", "wrong", "--no-auth-warning"];
    let (ok, out) = cli(port, &[&ca], &wrong, &["PING"]);
    assert!(!ok, "a wrong password must be refused: {out}");
    let (ok, out) = cli(port, &[&ca], &[], &["PING"]);
    assert!(!ok && out.contains("NOAUTH"), "default user is off: {out}");

    // The helper's readiness check and cli() still work: they log in as
    // the internal administrator, also after a restart.
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(
        server.cli(["GET", "CM:k"]),
        "",
        "a restarted server is empty"
    );
    let (ok, out) = cli(port, &[&ca], &app, &["PING"]);
    assert!(ok && out.trim() == "PONG", "users survive a restart: {out}");
}

/// Set in the child process of `missing_redis_cli_is_reported_at_once`.
const CHILD_ENV: &str = "CACHEME_TEST_SUPPORT_CHILD";

/// `REDIS_CLI_BIN` is process-global, so this runs the helper test below in
/// a child process (this test binary) with a redis-cli that does not exist.
#[test]
fn missing_redis_cli_is_reported_at_once() {
    let started = Instant::now();
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_start_tls_server",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env("REDIS_CLI_BIN", "/nonexistent/cacheme/redis-cli")
        .output()
        .expect("run the child test");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the child must fail:\n{all}");
    assert!(
        all.contains("/nonexistent/cacheme/redis-cli")
            && all.contains("apt-get install redis-tools")
            && all.contains("$REDIS_CLI_BIN"),
        "unexpected child output:\n{all}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reported before any startup timeout"
    );
}

#[test]
#[ignore = "helper: run in a child process by missing_redis_cli_is_reported_at_once"]
fn child_start_tls_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let _server = RedisServer::builder().tls(TlsClientAuth::Required).start();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cacheme-ts-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
