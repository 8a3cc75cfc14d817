//! Managed and secured Redis (docs/deployments.md): ACL users and the
//! minimal ACL rule, `verify()`, TLS with a private CA and client
//! certificates, secrets kept out of output and logs, and Sentinel
//! failover under load.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cacheme::{Cache, CacheBuilder, Error, InvalidNode, Node, Pattern};
use cacheme_test_support::{RedisServer, SentinelGroup};
use serde::{Deserialize, Serialize};

use crate::fixtures::{builder_for, documented_acl_rule, secured_server};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stock {
    id: u64,
    count: u64,
}

/// A node with a local tier, a tag and a dependency group: every kind of
/// request cacheme sends.
#[derive(Debug, Node)]
#[node(key = "stock:{id}", value = Stock, tag = "deployment_stock", local_ttl = 60,
       local_capacity = 1000, invalid_nodes = Self::warehouse)]
struct StockNode {
    id: u64,
    warehouse: u64,
}

impl StockNode {
    fn warehouse(&self) -> WarehouseInvalid {
        WarehouseInvalid { id: self.warehouse }
    }
}

#[derive(Debug, InvalidNode)]
#[invalid_node(key = "warehouse:{id}")]
struct WarehouseInvalid {
    id: u64,
}

/// The rule without one of its words, or with one replaced.
fn rule_with(rule: &str, remove: &str, add: &str) -> String {
    let mut words: Vec<&str> = rule.split(' ').filter(|w| *w != remove).collect();
    if !add.is_empty() {
        words.push(add);
    }
    words.join(" ")
}

/// Wait (bounded) until the cache's event subscription is up.
async fn subscribed(cache: &Cache) {
    let started = Instant::now();
    while !cache.local_tiers_active() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the event subscription never came up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn load_stock(cache: &Cache, id: u64, warehouse: u64, count: u64) -> Stock {
    cache
        .objects::<StockNode>()
        .get_or_load((id, warehouse), || async move {
            Ok::<_, Infallible>(Stock { id, count })
        })
        .await
        .expect("the loader cannot fail")
}

/// Everything a cache sends, against `writer` and `reader` (two caches on
/// one Redis, as two processes would be): loads, hits, waits, local hits,
/// and every kind of invalidation reaching the other cache's local tier.
async fn workload(writer: &Cache, reader: &Cache) {
    subscribed(writer).await;
    subscribed(reader).await;
    // Loads and hits, async.
    assert_eq!(load_stock(reader, 1, 9, 10).await.count, 10);
    assert_eq!(load_stock(reader, 1, 9, 99).await.count, 10, "a hit");
    assert_eq!(load_stock(writer, 1, 9, 99).await.count, 10, "a remote hit");
    // A batch read (MGET).
    let found = writer
        .objects::<StockNode>()
        .get_many([(1, 9), (2, 9)])
        .await;
    assert_eq!(found, [Some(Stock { id: 1, count: 10 }), None]);
    // Blocking calls.
    let value: u64 = writer
        .lookup::<u64>("blocking")
        .load_blocking(|| Ok::<_, Infallible>(5))
        .expect("load");
    assert_eq!(value, 5);
    let again = writer
        .lookup::<u64>("blocking")
        .load_blocking(|| Ok::<_, Infallible>(6))
        .expect("load");
    assert_eq!(again, 5, "a blocking hit");
    // Waiters woken by the fill (pub/sub) while one caller loads.
    let slow = {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .lookup::<u64>("herd")
                .load(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, Infallible>(1)
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waited = reader
        .lookup::<u64>("herd")
        .load(|| async { Ok::<_, Infallible>(2) })
        .await
        .expect("load");
    assert_eq!(waited, 1, "the waiter got the other cache's load");
    assert_eq!(slow.await.expect("task").expect("load"), 1);
    // Every kind of invalidation reaches the other cache's local tier.
    for (kind, id) in [
        ("node", 11),
        ("group", 12),
        ("tag", 13),
        ("pattern", 14),
        ("durable", 15),
    ] {
        load_stock(reader, id, 7, 100).await;
        match kind {
            "node" => {
                writer
                    .objects::<StockNode>()
                    .invalid((id, 7))
                    .await
                    .expect("invalid");
            }
            "group" => {
                writer
                    .invalid_objects::<WarehouseInvalid>()
                    .invalid(7)
                    .await
                    .expect("group");
            }
            "tag" => {
                writer.tag("deployment_stock").invalid().await.expect("tag");
            }
            "pattern" => {
                writer
                    .create_invalidation()
                    .pattern(Pattern::prefix("stock:"))
                    .run()
                    .await
                    .expect("pattern");
            }
            _ => {
                writer
                    .create_invalidation()
                    .key(format!("stock:{id}"))
                    .durable(0, Duration::from_millis(100))
                    .run()
                    .await
                    .expect("durable");
            }
        }
        let started = Instant::now();
        loop {
            if load_stock(reader, id, 7, 200).await.count == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{kind}: the invalidation never reached the other cache"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn acl_cache(url: String) -> CacheBuilder {
    Cache::builder()
        .redis_url(url)
        .op_timeout(Duration::from_secs(2))
}

/// The rule of docs/deployments.md is enough: `verify()` passes, and a
/// workload of every request kind runs without a single store error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_acl_rule_is_sufficient() {
    let rule = documented_acl_rule();
    let server = RedisServer::builder()
        .disable_default_user()
        .acl_user("cacheme", "s3cret-pw", &rule)
        .start();
    let writer = acl_cache(server.user_url("cacheme"))
        .verify()
        .build()
        .expect("the documented rule passes verify()");
    // The builder form of the same credentials.
    let reader = acl_cache(server.url())
        .username("cacheme")
        .password("s3cret-pw")
        .verify()
        .build()
        .expect("the documented rule passes verify()");
    writer.verify().await.expect("and again, from async code");
    workload(&writer, &reader).await;
    for cache in [&writer, &reader] {
        let stats = cache.stats();
        assert_eq!(stats.store_error, 0, "{stats:?}");
        assert!(stats.hit > 0, "{stats:?}");
    }
    assert!(reader.stats().local_hit > 0, "{:?}", reader.stats());
}

/// Narrower rules fail `verify()` with `PermissionDenied` naming what is
/// missing; at run time the same refusal is a counted fail-open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrower_acl_rules_fail_verify_naming_the_command() {
    let rule = documented_acl_rule();
    let narrower = [
        ("no_xadd", rule_with(&rule, "+xadd", ""), "XADD"),
        ("no_channel", rule_with(&rule, "&CM:*", ""), "PUBLISH"),
        ("no_evalsha", rule_with(&rule, "+evalsha", ""), "EVALSHA"),
        (
            "no_subscribe",
            rule_with(&rule, "+subscribe", ""),
            "SUBSCRIBE",
        ),
        // Redis refuses the script itself: its keys are not the user's.
        ("other_keys", rule_with(&rule, "~CM:*", "~other:*"), "EVAL"),
        ("no_time", rule_with(&rule, "+time", ""), "TIME"),
        ("no_mget", rule_with(&rule, "+mget", ""), "MGET"),
    ];
    let mut builder = RedisServer::builder();
    for (user, rules, _) in &narrower {
        builder = builder.acl_user(*user, "pw", rules);
    }
    let server = builder.start();
    for (user, _, command) in &narrower {
        let error = acl_cache(server.user_url(user))
            .verify()
            .build()
            .expect_err("a narrower rule fails verify()");
        let message = error.to_string();
        match &error {
            Error::PermissionDenied {
                user: denied_user,
                command: denied,
                reason,
            } => {
                assert_eq!(denied_user, user, "{message}");
                assert_eq!(denied, command, "{user}: {message}");
                // (Redis 7.0 words it "The user executing the script can't
                // run this command", later versions "NOPERM ...".)
                assert!(
                    reason.to_lowercase().contains("noperm") || reason.contains("can't"),
                    "{message}"
                );
            }
            other => panic!("{user}: expected PermissionDenied, got {other:?}"),
        }
        assert!(
            message.contains(&format!("`{command}`")) && message.contains("docs/deployments.md"),
            "{message}"
        );
        println!("{user}: {message}");
    }

    // Without verify(), the cache starts, and a refused command fails open:
    // the caller gets the loader's value, the error is counted.
    let cache = acl_cache(server.user_url("other_keys"))
        .build()
        .expect("no check without verify()");
    let value = cache
        .lookup::<u64>("k")
        .load(|| async { Ok::<_, Infallible>(7) })
        .await
        .expect("fail-open");
    assert_eq!(value, 7);
    assert!(cache.stats().store_error > 0, "{:?}", cache.stats());
}

/// A wrong password and an unknown user are `Authentication` errors that
/// name the user and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_authentication_errors() {
    let server = RedisServer::builder()
        .acl_user("cacheme", "right-pw", "~CM:* &CM:* +@all")
        .disable_default_user()
        .start();
    for (user, password) in [("cacheme", "wrong-pw-1"), ("nobody", "wrong-pw-2")] {
        let error = acl_cache(server.url_with_credentials(user, password))
            .verify()
            .build()
            .expect_err("refused");
        let shown = format!("{error} {error:?} {:#}", anyhow_chain(&error));
        assert!(
            matches!(&error, Error::Authentication { user: u, .. } if u == user),
            "{shown}"
        );
        assert!(shown.contains("AuthenticationFailed"), "{shown}");
        assert!(!shown.contains(password), "{shown}");
    }
    // `requirepass` (no user in the URL) is the `default` user.
    let server = RedisServer::builder().requirepass("the-pw").start();
    let error = acl_cache(server.url_with_credentials("", "not-the-pw"))
        .verify()
        .build()
        .expect_err("refused");
    assert!(
        matches!(&error, Error::Authentication { user, .. } if user == "default"),
        "{error:?}"
    );
    acl_cache(server.user_url("default"))
        .verify()
        .build()
        .expect("the right password");
}

/// An error and its causes, `a: b: c`.
fn anyhow_chain(error: &Error) -> String {
    let mut out = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A cache for a [`secured_server`]: TLS with client certificates, as its
/// ACL user with the documented rule.
fn tls_cache(server: &RedisServer) -> CacheBuilder {
    builder_for(server).op_timeout(Duration::from_secs(2))
}

/// Over TLS with client certificates (mutual TLS) and an ACL user: async
/// calls, blocking calls, the subscriber (waiters, local tiers) and the
/// lease keeper all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_on_every_path() {
    let server = secured_server();
    assert!(server.url().starts_with("rediss://"));
    // Short leases: loads outlive them, so the lease keeper must renew.
    let lease = Duration::from_millis(200);
    let writer = tls_cache(&server)
        .lease_ttl(lease)
        .verify()
        .build()
        .expect("verify over TLS");
    let reader = tls_cache(&server).lease_ttl(lease).build().expect("cache");
    workload(&writer, &reader).await;

    // The lease keeper renews over TLS: a load that outlives the lease
    // several times is still the only one.
    let loads = Arc::new(AtomicU64::new(0));
    let long = {
        let (writer, loads) = (writer.clone(), loads.clone());
        std::thread::spawn(move || {
            writer
                .lookup::<u64>("long")
                .load_blocking(|| {
                    loads.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1000));
                    Ok::<_, Infallible>(1)
                })
                .expect("load")
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let value = reader
        .lookup::<u64>("long")
        .load(|| {
            let loads = loads.clone();
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(2)
            }
        })
        .await
        .expect("load");
    assert_eq!(long.join().expect("thread"), 1);
    assert_eq!(
        value,
        1,
        "the second caller waited for the renewed lease: {:?} {:?}",
        writer.stats(),
        reader.stats()
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    for cache in [&writer, &reader] {
        let stats = cache.stats();
        assert_eq!(stats.store_error, 0, "{stats:?}");
    }
}

/// Without the client certificate, or without the private CA, the TLS
/// server refuses the connection: `verify()` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_client_certificate_or_the_ca_is_refused() {
    let server = secured_server();
    let tls = server.tls().expect("a TLS server");
    let no_client_cert = acl_cache(server.user_url("cacheme"))
        .tls_ca(tls.ca_cert_pem())
        .verify()
        .build()
        .expect_err("mutual TLS is required");
    let no_ca = acl_cache(server.user_url("cacheme"))
        .tls_client_cert(tls.client_cert_pem(), tls.client_key_pem())
        .verify()
        .build()
        .expect_err("the private CA is not trusted by default");
    for error in [no_client_cert, no_ca] {
        let shown = anyhow_chain(&error);
        assert!(matches!(error, Error::Connect { .. }), "{shown}");
        assert!(!shown.contains("fixture-pw"), "{shown}");
        println!("{shown}");
    }
    // And a cache without verify() fails open against it.
    let cache = acl_cache(server.user_url("cacheme"))
        .tls_ca(tls.ca_cert_pem())
        .build()
        .expect("no check");
    let value = cache
        .lookup::<u64>("k")
        .load(|| async { Ok::<_, Infallible>(3) })
        .await
        .expect("fail-open");
    assert_eq!(value, 3);
    assert!(cache.stats().store_error > 0);
}

// -------------------------------------------------------------- secrets --

/// Log lines of the whole test binary (cacheme's, at every level), from the
/// moment the capture is installed.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("cacheme=trace")
            .with_ansi(false)
            .with_writer(move || CaptureWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test sets a global subscriber");
        logs
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Passwords never show: in the `Debug` output of the builder and the cache
/// (every form of connection: URL, builder credentials, TLS, Sentinel), in
/// errors, or in the log lines of failing connections, subscriptions and
/// sentinels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_output_and_logs() {
    captured_logs();
    const SECRET: &str = "Sup3rSecretPw";
    let server = RedisServer::builder()
        .disable_default_user()
        .acl_user("cacheme", "the-real-one", "~CM:* &CM:* +@all")
        .start();
    let tls_server = secured_server();
    let tls = tls_server.tls().expect("TLS");
    let bad_url = server.url_with_credentials("cacheme", SECRET);
    let builders: Vec<(&str, CacheBuilder)> = vec![
        ("url", Cache::builder().redis_url(bad_url.clone())),
        (
            "builder password",
            Cache::builder()
                .redis_url(server.url())
                .username("cacheme")
                .password(SECRET),
        ),
        (
            "tls",
            Cache::builder()
                .redis_url(tls_server.url_with_credentials("cacheme", SECRET))
                .tls_ca(tls.ca_cert_pem())
                .tls_client_cert(tls.client_cert_pem(), tls.client_key_pem()),
        ),
        (
            "sentinel url",
            // No sentinel listens on port 1: the watcher logs its failure.
            Cache::builder().redis_url(format!(
                "redis+sentinel://cacheme:{SECRET}@127.0.0.1:1/mymaster"
            )),
        ),
        (
            "sentinel builder",
            Cache::builder()
                .sentinel(["127.0.0.1:1"], "mymaster")
                .password(SECRET),
        ),
    ];
    let mut shown = String::new();
    for (name, builder) in builders {
        let builder = builder.op_timeout(Duration::from_millis(300));
        let debug = format!("{builder:?}");
        assert!(
            debug.contains("***"),
            "{name}: the password is shown as *** ({debug})"
        );
        shown.push_str(&format!("{name}: {debug}\n"));
        let cache = builder.build().expect("builds without connecting");
        shown.push_str(&format!("{name}: {cache:?}\n"));
        // Every path that connects, failing: async, blocking, verify, an
        // invalidation (returned to the caller).
        let _ = cache
            .lookup::<u64>("k")
            .load(|| async { Ok::<_, Infallible>(1) })
            .await;
        let _ = cache
            .lookup::<u64>("k")
            .load_blocking(|| Ok::<_, Infallible>(1));
        if let Err(error) = cache.verify().await {
            shown.push_str(&format!(
                "{name}: {error} / {error:?} / {}\n",
                anyhow_chain(&error)
            ));
        }
        match cache.create_invalidation().key("k").run().await {
            Err(error) => shown.push_str(&format!(
                "{name}: {error} / {error:?} / {}\n",
                anyhow_chain(&error)
            )),
            Ok(_) => panic!("{name}: the invalidation cannot succeed with a wrong password"),
        }
        shown.push_str(&format!("{name}: {:?}\n", cache.stats()));
    }
    // The other public type made from a URL: an invalidation source.
    let source = cacheme::sources::RedisChannelSource::new(&bad_url, "changes").expect("valid URL");
    shown.push_str(&format!("{source:?}\n"));
    // An unparseable URL is an error that shows the URL without its password.
    let error = Cache::builder()
        .redis_url(format!("redis+sentinel://u:{SECRET}@/no-hosts"))
        .build()
        .expect_err("no sentinel");
    shown.push_str(&format!("{error} / {error:?} / {}\n", anyhow_chain(&error)));
    let error = Cache::builder()
        .redis_url(format!("nonsense://u:{SECRET}@host"))
        .build()
        .expect_err("bad scheme");
    shown.push_str(&format!("{error} / {error:?} / {}\n", anyhow_chain(&error)));

    // Give the subscriber and sentinel threads time to fail and log.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = logs_text();
    assert!(!shown.contains(SECRET), "a password in output:\n{shown}");
    assert!(!logs.contains(SECRET), "a password in the logs:\n{logs}");
    // The checks saw what they were meant to see.
    for expected in [
        "AuthenticationFailed",
        "redis+sentinel://cacheme:***@127.0.0.1:1/mymaster",
        "Authentication {",
    ] {
        assert!(shown.contains(expected), "{expected} not in:\n{shown}");
    }
    for expected in [
        "cacheme store operation failed",
        "event subscription lost",
        "the sentinels named no reachable primary",
        "authentication failed",
    ] {
        assert!(
            logs.contains(expected),
            "{expected} not in the logs:\n{logs}"
        );
    }
}

// ------------------------------------------------------------- sentinel --

/// What the 64 tasks observed.
#[derive(Debug, Default)]
struct Observed {
    calls: AtomicU64,
    errors_to_caller: AtomicU64,
    wrong_values: AtomicU64,
    invalidations: AtomicU64,
    invalidations_failed: AtomicU64,
}

/// 64 tasks of reads, loads and invalidations through a failover (the
/// `SENTINEL FAILOVER` command, or a `kill -9` of the primary): no call
/// returns an error, no value is wrong, hits resume on the new primary
/// within a bound, the subscriber follows (invalidations reach another
/// cache's local tier), and queued invalidations are flushed.
async fn failover_under_load(kill: bool) {
    let group = SentinelGroup::start();
    let builder = |cache: CacheBuilder| cache.op_timeout(Duration::from_millis(250));
    let cache = builder(Cache::builder().redis_url(group.sentinel_url()))
        .verify()
        .build()
        .expect("the sentinels name the primary");
    let addrs: Vec<String> = group
        .sentinel_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let other = builder(Cache::builder().sentinel(addrs, group.master_name()))
        .verify()
        .build()
        .expect("the builder form");
    subscribed(&cache).await;
    subscribed(&other).await;

    let observed = Arc::new(Observed::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..64u64 {
        let (cache, observed, stop) = (cache.clone(), observed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = task;
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = (n >> 33) % 200;
                let result = cache
                    .lookup::<u64>(format!("k:{k}"))
                    .load(|| async move { Ok::<_, Infallible>(k * 7 + 1) })
                    .await;
                observed.calls.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(value) if value == k * 7 + 1 => {}
                    Ok(_) => {
                        observed.wrong_values.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        observed.errors_to_caller.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if (n >> 20) % 50 == 0 {
                    observed.invalidations.fetch_add(1, Ordering::Relaxed);
                    let invalidated = cache
                        .create_invalidation()
                        .key(format!("k:{k}"))
                        .run()
                        .await;
                    if invalidated.is_err() {
                        // Queued and retried; counted, not a caller error of a read.
                        observed
                            .invalidations_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits_before = cache.stats().hit;
    assert!(hits_before > 0, "steady state has hits");

    let old = group.primary_addr();
    let promotion = if kill {
        group.kill_primary()
    } else {
        group.failover()
    };
    let promoted_at = Instant::now();
    let new = group.primary_addr();
    assert_ne!(old, new);

    // Hits resume on the new primary: a value filled now is stored there
    // and read back as a hit.
    let mut probe = 0u64;
    let resumed = loop {
        probe += 1;
        let key = format!("probe:{probe}");
        let loads = AtomicU64::new(0);
        for _ in 0..2 {
            let _ = cache
                .lookup::<u64>(key.as_str())
                .load(|| async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(probe)
                })
                .await;
        }
        let on_new_primary = {
            let mut conn = group.server(new).connection();
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(format!("CM:{{{key}}}"))
                .query(&mut conn)
                .expect("GET on the new primary");
            stored.is_some()
        };
        if loads.load(Ordering::SeqCst) == 1 && on_new_primary {
            break promoted_at.elapsed();
        }
        assert!(
            promoted_at.elapsed() < Duration::from_secs(15),
            "hits did not resume on the new primary {new} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The load keeps running a while on the new primary.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("task");
    }

    // The subscribers followed: an invalidation by one cache reaches the
    // other's local tier, through the new primary.
    subscribed(&cache).await;
    subscribed(&other).await;
    load_stock(&other, 1, 1, 10).await;
    assert_eq!(load_stock(&other, 1, 1, 20).await.count, 10, "a local hit");
    cache
        .objects::<StockNode>()
        .invalid((1, 1))
        .await
        .expect("invalid on the new primary");
    let started = Instant::now();
    while load_stock(&other, 1, 1, 30).await.count != 30 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the invalidation did not reach the other cache after the failover: {:?}, {:?}",
            other.stats(),
            load_stock(&other, 1, 1, 30).await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing lost: what failed during the failover is flushed.
    cache
        .flush_invalidations()
        .await
        .expect("queued invalidations run on the new primary");
    assert_eq!(cache.pending_invalidations(), 0);

    let stats = cache.stats();
    let errors = observed.errors_to_caller.load(Ordering::Relaxed);
    let wrong = observed.wrong_values.load(Ordering::Relaxed);
    println!(
        "sentinel {}: promotion took {promotion:?}; hits resumed {resumed:?} after it; \
         calls={} errors_to_caller={errors} wrong_values={wrong} invalidations={} \
         (failed and queued: {}); hits={} (before: {hits_before}) store_errors={} \
         invalidations retried={} dropped={}",
        if kill { "kill -9" } else { "SENTINEL FAILOVER" },
        observed.calls.load(Ordering::Relaxed),
        observed.invalidations.load(Ordering::Relaxed),
        observed.invalidations_failed.load(Ordering::Relaxed),
        stats.hit,
        stats.store_error,
        stats.invalidation_retried,
        stats.invalidation_dropped,
    );
    assert_eq!(errors, 0, "{observed:?}");
    assert_eq!(wrong, 0, "{observed:?}");
    assert_eq!(stats.invalidation_dropped, 0, "{stats:?}");
    assert!(stats.hit > hits_before, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_command_under_load() {
    failover_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_kill_primary_under_load() {
    failover_under_load(true).await;
}

// ----------------------------------------------------------------- cost --

/// A remote hit over TLS against a raw `GET` over a TLS connection and
/// against a remote hit over plain TCP, in one run. Prints ratios; asserts
/// nothing (speed is measured, not tested). Run with
/// `cargo test --release --test suite deployments::tls_hit_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn tls_hit_cost() {
    const N: u32 = 1_000;
    const BATCHES: usize = 41;
    let tls_server = secured_server();
    let tls = tls_server.tls().expect("TLS");
    let plain_server = RedisServer::start();
    let tls_cache = tls_cache(&tls_server).build().expect("cache");
    let plain_cache = Cache::builder()
        .redis_url(plain_server.url())
        .build()
        .expect("cache");
    for cache in [&tls_cache, &plain_cache] {
        cache
            .lookup::<u64>("hot")
            .load(|| async { Ok::<_, Infallible>(1) })
            .await
            .expect("load");
    }
    let raw = redis::Client::build_with_tls(
        tls_server.user_url("cacheme"),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: tls.client_cert_pem().to_vec(),
                client_key: tls.client_key_pem().to_vec(),
            }),
            root_cert: Some(tls.ca_cert_pem().to_vec()),
        },
    )
    .expect("client");
    // No response timeout, as cacheme's own connection (a timer per
    // request would be counted against the raw GET only).
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut raw = raw
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("TLS connection");
    // Interleaved batches, so that the three see the same machine; the
    // median batch of each is reported.
    let (mut raw_gets, mut tls_hits, mut plain_hits) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..N {
            let _: Option<Vec<u8>> = redis::cmd("GET")
                .arg("CM:{hot}")
                .query_async(&mut raw)
                .await
                .expect("GET");
        }
        raw_gets.push(started.elapsed() / N);
        let started = Instant::now();
        for _ in 0..N {
            let _ = tls_cache.lookup::<u64>("hot").get().await;
        }
        tls_hits.push(started.elapsed() / N);
        let started = Instant::now();
        for _ in 0..N {
            let _ = plain_cache.lookup::<u64>("hot").get().await;
        }
        plain_hits.push(started.elapsed() / N);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (raw_get, tls_hit, plain_hit) = (median(raw_gets), median(tls_hits), median(plain_hits));
    println!(
        "medians of {BATCHES} batches of {N}: raw GET over TLS {raw_get:?}; cacheme hit over TLS \
         {tls_hit:?} ({:.3}x the raw GET); cacheme hit over plain TCP {plain_hit:?} (TLS/plain {:.3}x)",
        tls_hit.as_secs_f64() / raw_get.as_secs_f64(),
        tls_hit.as_secs_f64() / plain_hit.as_secs_f64(),
    );
}
