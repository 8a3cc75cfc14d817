//! Tests for servers with a password or ACL users.

use cacheme_test_support::RedisServer;

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection()
}

fn ping(con: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("PING").query(con)
}

fn assert_code(err: &redis::RedisError, code: &str) {
    assert_eq!(err.code(), Some(code), "expected {code}, got: {err:?}");
}

fn assert_wrong_credentials(err: &redis::RedisError) {
    assert_eq!(
        err.kind(),
        redis::ErrorKind::AuthenticationFailed,
        "expected an authentication failure, got: {err:?}"
    );
}

#[test]
fn requirepass_refuses_wrong_and_missing_passwords() {
    let server = RedisServer::builder().requirepass("s3cret").start();
    let port = server.port();
    assert_eq!(
        server.user_url("default"),
        format!("redis://default:s3cret@127.0.0.1:{port}/")
    );
    assert_eq!(
        server.url_with_credentials("", "s3cret"),
        format!("redis://:s3cret@127.0.0.1:{port}/")
    );

    let mut con = connect(&server.user_url("default")).expect("the right password");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");
    let mut con = connect(&server.url_with_credentials("", "s3cret")).expect("requirepass form");
    assert_eq!(ping(&mut con).expect("PING"), "PONG");

    let err = connect(&server.url_with_credentials("default", "wrong"))
        .and_then(|mut con| ping(&mut con))
        .expect_err("a wrong password must be refused");
    assert_wrong_credentials(&err);

    let err = connect(&server.url())
        .and_then(|mut con| ping(&mut con))
        .expect_err("no password must be refused");
    assert_code(&err, "NOAUTH");

    // The helper's own connection works regardless.
    let mut admin = server.connection();
    assert_eq!(ping(&mut admin).expect("PING"), "PONG");
}

#[test]
fn acl_users_get_their_rules_and_the_default_user_can_be_disabled() {
    let mut server = RedisServer::builder()
        .disable_default_user()
        .acl_user("app", "secret", "~CM:* &CM:* +@all")
        .acl_user("reader", "r3ad", "~* +get +ping")
        .start();
    let port = server.port();
    assert_eq!(
        server.user_url("app"),
        format!("redis://app:secret@127.0.0.1:{port}/")
    );

    let mut app = connect(&server.user_url("app")).expect("app logs in");
    let () = redis::cmd("SET")
        .arg("CM:k")
        .arg("v")
        .query(&mut app)
        .expect("app may write its prefix");
    let err = redis::cmd("SET")
        .arg("other:k")
        .arg("v")
        .query::<()>(&mut app)
        .expect_err("app may not write outside CM:*");
    assert_code(&err, "NOPERM");
    let err = redis::cmd("PUBLISH")
        .arg("other")
        .arg("m")
        .query::<i64>(&mut app)
        .expect_err("app may not publish outside CM:*");
    assert_code(&err, "NOPERM");
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("CM:events")
        .arg("m")
        .query(&mut app)
        .expect("app may publish on CM:*");
    assert_eq!(receivers, 0);

    let mut reader = connect(&server.user_url("reader")).expect("reader logs in");
    let value: String = redis::cmd("GET")
        .arg("CM:k")
        .query(&mut reader)
        .expect("GET");
    assert_eq!(value, "v");
    let err = redis::cmd("SET")
        .arg("CM:k")
        .arg("w")
        .query::<()>(&mut reader)
        .expect_err("reader may not SET");
    assert_code(&err, "NOPERM");

    for url in [
        server.url_with_credentials("app", "wrong"),
        server.url_with_credentials("nobody", "secret"),
    ] {
        let err = connect(&url)
            .and_then(|mut con| ping(&mut con))
            .expect_err("wrong credentials must be refused");
        assert_wrong_credentials(&err);
    }
    let err = connect(&server.url())
        .and_then(|mut con| ping(&mut con))
        .expect_err("the default user is disabled");
    assert_code(&err, "NOAUTH");

    // The helper's own checks log in as its administrator: restart works,
    // and the users come back.
    server.restart();
    let mut app = connect(&server.user_url("app")).expect("app logs in after a restart");
    assert_eq!(ping(&mut app).expect("PING"), "PONG");
    let mut admin = server.connection();
    assert_eq!(ping(&mut admin).expect("PING"), "PONG");

    // Debug output names the users but holds no password.
    let debug = format!("{server:?}");
    assert!(debug.contains("\"app\""), "{debug}");
    assert!(!debug.contains("secret"), "{debug}");
}

#[test]
#[should_panic(expected = "has no user \"ghost\"")]
fn user_url_of_an_unknown_user_panics() {
    let server = RedisServer::builder()
        .acl_user("app", "secret", "+@all ~*")
        .start();
    let _ = server.user_url("ghost");
}

#[test]
#[should_panic(expected = "must be non-empty and contain no whitespace")]
fn passwords_with_spaces_are_refused() {
    let _ = RedisServer::builder().requirepass("two words");
}

#[test]
fn builders_do_not_show_passwords() {
    let builder =
        RedisServer::builder()
            .requirepass("pw-default")
            .acl_user("app", "pw-app", "~CM:* +@all");
    let debug = format!("{builder:?}");
    assert!(debug.contains("app") && debug.contains("~CM:*"), "{debug}");
    assert!(!debug.contains("pw-"), "{debug}");
    let sentinel = cacheme_test_support::SentinelGroup::builder().requirepass("pw-group");
    let debug = format!("{sentinel:?}");
    assert!(!debug.contains("pw-"), "{debug}");
}
