#![allow(missing_docs)]
//! Local tier coherence across processes: how long after an invalidation
//! returns in one process its entry is gone from another process's local
//! tier. Two processes on one redis-server: this one invalidates, a child
//! (this binary again) holds the key in its local tier and watches it go.
//! Last line:
//!
//! ```text
//! coherence invalidations=1000 p50_ms=0.6 p99_ms=2.1 max_ms=7.9 lost=0
//! ```
//!
//! - latency: from the invalidating call's return (wall clock, here) to the
//!   entry being gone there (wall clock, in the child); both processes are
//!   on one machine, so the clocks are the same clock. Negative (gone before
//!   the call returned) counts as 0.
//! - `lost`: invalidations after which the child still served the old value
//!   100 ms later.
//!
//! `just coherence` runs it (`cargo bench --bench coherence`); under
//! `cargo test` a 50-invalidation smoke run asserts `lost=0`.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cacheme::{Cache, Node};
use cacheme_test_support::RedisServer;

/// The watched node: a local tier, coherent by events.
#[derive(Node)]
#[node(key = "watched:{id}", value = u64, local_ttl = 600, local_capacity = 100)]
struct Watched {
    id: u64,
}

const LOST_AFTER: Duration = Duration::from_millis(100);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let rounds = if full { 1000 } else { 50 };
    let line = parent(rounds);
    println!("{line}");
    if !full {
        assert!(
            line.ends_with("lost=0"),
            "the smoke run lost an invalidation: {line}"
        );
    }
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn cache(url: &str) -> Cache {
    Cache::builder().redis_url(url).build().expect("cache")
}

async fn until_subscribed(cache: &Cache) {
    while !cache.local_tiers_active() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn parent(rounds: u64) -> String {
    let server = RedisServer::start();
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .args(["--child", &server.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child process");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut read = move || -> String {
        from_child
            .next()
            .expect("the child is alive")
            .expect("child output")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = cache(&server.url());
    runtime.block_on(until_subscribed(&cache));

    let mut latencies = Vec::with_capacity(rounds as usize);
    let mut lost = 0;
    for round in 0..rounds {
        writeln!(to_child, "hold {round}").expect("to child");
        assert_eq!(read(), format!("holding {round}"));
        runtime
            .block_on(cache.objects::<Watched>().invalid(1))
            .expect("invalidation");
        let returned = unix_ns();
        writeln!(to_child, "watch {round}").expect("to child");
        let reply = read();
        let mut words = reply.split_whitespace().skip(2);
        match (words.next(), words.next()) {
            (Some("gone"), Some(at)) => {
                let gone: i128 = at.parse().expect("a time");
                latencies.push(((gone - returned).max(0) as f64) / 1e6);
            }
            _ => {
                lost += 1;
                latencies.push(LOST_AFTER.as_secs_f64() * 1e3);
            }
        }
    }
    drop(to_child);
    let _ = child.wait();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    format!(
        "coherence invalidations={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} lost={}",
        rounds,
        percentile(0.50),
        percentile(0.99),
        latencies.last().copied().unwrap_or(0.0),
        lost
    )
}

/// The child: on `hold N`, put key 1 (value N) in the local tier; on
/// `watch N`, spin until the entry is gone, then say when (or `kept`).
fn child(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cache = cache(url);
        until_subscribed(&cache).await;
        let watched = cache.objects::<Watched>();
        let stdin = std::io::stdin();
        let mut stdout = std::io::stdout();
        for line in stdin.lock().lines() {
            let line = line.expect("stdin");
            let Some((command, round)) = line.split_once(' ') else {
                continue;
            };
            let round: u64 = round.parse().expect("a round");
            match command {
                "hold" => {
                    // Load (or refresh) until the value is in the local tier.
                    loop {
                        let value = watched
                            .lookup(&Watched { id: 1 })
                            .stale(false)
                            .load(|| async { Ok::<_, Infallible>(round) })
                            .await
                            .expect("load");
                        let before = cache.stats().local_hit;
                        let again = watched.get(1).await;
                        if value == round
                            && again == Some(round)
                            && cache.stats().local_hit > before
                        {
                            break;
                        }
                    }
                    writeln!(stdout, "holding {round}").expect("stdout");
                }
                "watch" => {
                    let started = Instant::now();
                    let mut reply = format!("round {round} kept");
                    while started.elapsed() < LOST_AFTER {
                        let before = cache.stats().local_hit;
                        let _ = watched.get(1).await;
                        if cache.stats().local_hit == before {
                            reply = format!("round {round} gone {}", unix_ns());
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    writeln!(stdout, "{reply}").expect("stdout");
                }
                _ => {}
            }
            stdout.flush().expect("flush");
        }
    });
}
