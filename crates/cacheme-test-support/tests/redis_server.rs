//! Tests for the `RedisServer` helper, against real `redis-server` processes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cacheme_test_support::RedisServer;

/// Set in child processes that run one of the `child_*` helper tests below.
const CHILD_ENV: &str = "CACHEME_TEST_SUPPORT_CHILD";

fn ping(server: &RedisServer) -> String {
    let mut con = server.connection();
    redis::cmd("PING")
        .query::<String>(&mut con)
        .expect("PING should succeed")
}

#[test]
fn two_servers_run_side_by_side() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 6379, "must never use the shared development port");
    assert_eq!(ping(&a), "PONG");
    assert_eq!(ping(&b), "PONG");
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}/", a.port()));

    let mut con_a = a.connection();
    let () = redis::cmd("SET")
        .arg("only-in-a")
        .arg("1")
        .query(&mut con_a)
        .expect("SET");
    let mut con_b = b.client().get_connection().expect("connect to b");
    let in_b: Option<String> = redis::cmd("GET")
        .arg("only-in-a")
        .query(&mut con_b)
        .expect("GET");
    assert_eq!(in_b, None, "servers must not share data");
}

#[test]
fn builder_passes_extra_arguments() {
    let server = RedisServer::builder()
        .arg("--maxmemory")
        .arg("1mb")
        .args(["--maxmemory-policy", "noeviction"])
        .start();
    let mut con = server.connection();
    let maxmemory: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut con)
        .expect("CONFIG GET maxmemory");
    assert_eq!(maxmemory, ["maxmemory", "1048576"]);
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut con)
        .expect("CONFIG GET maxmemory-policy");
    assert_eq!(policy, ["maxmemory-policy", "noeviction"]);
    // Nothing is persisted.
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .expect("CONFIG GET save");
    assert_eq!(save, ["save", ""]);
}

#[test]
fn kill_and_restart_keep_the_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    let mut con = server.connection();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let old_pid = server.pid().expect("running server has a pid");

    server.kill();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(
        redis::cmd("PING").query::<String>(&mut con).is_err(),
        "a killed server must not answer"
    );
    assert!(
        server
            .client()
            .get_connection_with_timeout(Duration::from_millis(500))
            .is_err(),
        "a killed server must not accept connections"
    );

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(old_pid));
    assert_eq!(ping(&server), "PONG");
    let mut con = server.connection();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(value, None, "a restarted server comes back empty");

    // Restarting a running server works too.
    server.restart();
    assert_eq!(ping(&server), "PONG");
    assert_eq!(server.port(), port);
}

#[test]
fn pause_makes_commands_time_out_and_resume_recovers() {
    let server = RedisServer::start();
    let mut con = server.connection();
    con.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).expect("PING"),
        "PONG"
    );

    server.pause();
    assert!(server.is_running(), "a paused server is still running");
    let started = Instant::now();
    let err = redis::cmd("PING")
        .query::<String>(&mut con)
        .expect_err("a paused server must not answer");
    assert!(err.is_timeout(), "expected a timeout, got {err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    server.resume();
    let mut con = server.connection();
    con.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set read timeout");
    assert_eq!(
        redis::cmd("PING")
            .query::<String>(&mut con)
            .expect("PING after resume"),
        "PONG"
    );
}

#[test]
fn drop_stops_the_process_and_removes_the_directory() {
    let server = RedisServer::start();
    let pid = server.pid().expect("pid");
    let dir = server.log_path().parent().expect("log dir").to_path_buf();
    assert!(dir.is_dir());
    assert!(process_is_alive(pid));
    drop(server);
    assert!(!process_is_alive(pid), "redis-server {pid} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn drop_stops_a_paused_server() {
    let server = RedisServer::start();
    let pid = server.pid().expect("pid");
    server.pause();
    drop(server);
    assert!(
        !process_is_alive(pid),
        "paused redis-server {pid} survived drop"
    );
}

#[test]
#[should_panic(expected = "apt-get install redis-server")]
fn missing_binary_panics_with_install_hint() {
    let _server = RedisServer::builder()
        .binary("/nonexistent/cacheme/redis-server")
        .start();
}

#[test]
fn pause_of_a_killed_server_panics_clearly() {
    let mut server = RedisServer::start();
    server.kill();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.pause()));
    let payload = result.expect_err("pause of a killed server must panic");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("is not running"), "got: {message}");
}

/// `REDIS_SERVER_BIN` is process-global, so it is tested in a child process
/// (this test binary, re-run with one helper test selected).
#[test]
fn redis_server_bin_env_is_honoured() {
    let output = run_child(
        "child_start_server",
        &[("REDIS_SERVER_BIN", "/nonexistent/from-env/redis-server")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "child should fail\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("/nonexistent/from-env/redis-server")
            && all.contains("$REDIS_SERVER_BIN")
            && all.contains("apt-get install redis-server"),
        "unexpected child output:\n{all}"
    );
}

/// A server that is never dropped (leaked, kept in a `static`, ...) is killed
/// by its watchdog when the test process exits.
#[cfg(target_os = "linux")]
#[test]
fn leaked_server_dies_with_the_test_process() {
    let output = run_child("child_leak_server", &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, value)| value.trim()))
            .unwrap_or_else(|| panic!("child did not print {name}\n{stdout}"))
            .to_owned()
    };
    let pid: u32 = field("LEAKED_PID=").parse().expect("pid");
    let dir = PathBuf::from(field("LEAKED_DIR="));
    let deadline = Instant::now() + Duration::from_secs(10);
    while (process_is_alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir_left = dir.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !process_is_alive(pid),
        "leaked redis-server {pid} outlived its test process"
    );
    assert!(!dir_left, "the watchdog did not remove {}", dir.display());
}

#[test]
#[ignore = "helper: run in a child process by redis_server_bin_env_is_honoured"]
fn child_start_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let _server = RedisServer::start();
}

#[test]
#[ignore = "helper: run in a child process by leaked_server_dies_with_the_test_process"]
fn child_leak_server() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let server = RedisServer::start();
    println!("LEAKED_PID={}", server.pid().expect("pid"));
    let dir = server.log_path().parent().expect("dir").to_path_buf();
    println!("LEAKED_DIR={}", dir.display());
    std::mem::forget(server);
}

/// Runs one `#[ignore]`d helper test of this binary in a child process.
fn run_child(test: &str, env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("current test binary");
    let mut command = Command::new(exe);
    command
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run child test process")
}

/// Whether `pid` exists and is not a zombie.
fn process_is_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Command::new("sh")
            .args(["-c", "kill -0 \"$1\" 2>/dev/null", "sh", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[test]
#[should_panic(expected = "was taken by another process")]
fn restart_panics_clearly_when_the_port_was_taken() {
    let mut server = RedisServer::start();
    server.kill();
    let _squatter =
        std::net::TcpListener::bind(("127.0.0.1", server.port())).expect("bind the freed port");
    server.restart();
}

#[test]
#[should_panic(expected = "exited during startup")]
fn bad_configuration_panics_with_the_server_output() {
    let _server = RedisServer::builder()
        .arg("--no-such-directive")
        .arg("1")
        .start();
}

#[test]
#[should_panic(expected = "did not answer PING within")]
fn silent_binary_hits_the_startup_timeout() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = std::env::temp_dir().join(format!("cacheme-ts-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create dir");
    let script = dir.join("silent-redis-server");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let result = std::panic::catch_unwind(|| {
        RedisServer::builder()
            .binary(&script)
            .startup_timeout(Duration::from_millis(300))
            .start()
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(payload) = result {
        std::panic::resume_unwind(payload);
    }
}
