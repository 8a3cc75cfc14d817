//! The load test (`just loadtest`): the service on the local PostgreSQL,
//! driven over loopback by a zipf workload, once with the cache off and
//! once on Redis (a redis-server of its own), in one run.
//!
//! ```text
//! cargo build --release -p service --bins && ./target/release/loadtest
//! ```
//!
//! Data: 2,000 users with 3 books and 2 cats each (schema `svc_loadtest`,
//! made anew). Workload: ids drawn from a zipf distribution (exponent 1.0)
//! over each table; 40% `GET /users/{id}`, 25% `GET /books/{id}`, 15%
//! `GET /users/{id}/books`, 10% `GET /cats/{id}`, the rest
//! `GET /users/{id}/summary`, except the share of writes (`--writes`,
//! default 0.5%): `PUT /books/{id}` with a new title. 8 connections
//! (`--connections`), each sending its next request when the last one is
//! answered.
//!
//! Each phase starts the service, reads every entity once (a service that
//! has been running: the cache is warm, and PostgreSQL's buffers are warm
//! for the uncached phase too), then replays the trace. The cache-off phase
//! runs for `--seconds` (default 15); the cache-on phase replays the same
//! requests it got through, bounded by the same time. The last line is
//!
//! ```text
//! loadtest rps_off=.. rps_on=.. p99_ms_off=.. p99_ms_on=.. db_queries_off=.. db_queries_on=..
//! ```

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheme_test_support::RedisServer;
use serde_json::json;
use service::client::Client;
use service::routes::Stats;

const USERS: i64 = 2_000;
const BOOKS_PER_USER: i64 = 3;
const CATS_PER_USER: i64 = 2;
const SCHEMA: &str = "svc_loadtest";

/// The options.
struct Options {
    seconds: f64,
    writes: f64,
    exponent: f64,
    /// `--plot PATH`: write the figures as an SVG bar chart there.
    plot: Option<PathBuf>,
    /// `--connections N` (default 8: enough to keep two CPUs busy; more
    /// only measures the scheduler's queue).
    connections: usize,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            seconds: 15.0,
            writes: 0.005,
            exponent: 1.0,
            plot: None,
            connections: 8,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
            if arg == "--plot" {
                options.plot = Some(PathBuf::from(value));
                continue;
            }
            let number: f64 = value
                .parse()
                .map_err(|_| format!("{arg} {value}: not a number"))?;
            match arg.as_str() {
                "--seconds" if number > 0.0 && number <= 60.0 => options.seconds = number,
                "--writes" if (0.0..=1.0).contains(&number) => options.writes = number,
                "--zipf" if number > 0.0 => options.exponent = number,
                "--connections" if (1.0..=512.0).contains(&number) => {
                    options.connections = number as usize;
                }
                _ => {
                    return Err(format!(
                        "unknown or out-of-range option {arg} {value} \
                         (--seconds 0..60, --writes 0..1, --zipf >0, --connections 1..512, --plot PATH)"
                    ));
                }
            }
        }
        Ok(options)
    }
}

/// The kinds of request, for the per-kind latencies.
const KINDS: [&str; 6] = [
    "user",
    "book",
    "user_books",
    "cat",
    "summary",
    "rename_book",
];

/// One request of the trace.
#[derive(Debug, Clone, Copy)]
enum Request {
    User(i64),
    Book(i64),
    UserBooks(i64),
    Cat(i64),
    Summary(i64),
    RenameBook(i64, usize),
}

/// splitmix64: a small, seeded, good-enough generator.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws ids 1..=n with probability proportional to 1 / rank^exponent; the
/// ranks are spread over the ids so that hot rows are not all neighbours.
struct Zipf {
    cumulative: Vec<f64>,
    n: i64,
}

impl Zipf {
    fn new(n: i64, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        Zipf { cumulative, n }
    }

    fn draw(&self, rng: &mut Rng) -> i64 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = rng.next_f64() * total;
        let rank = self.cumulative.partition_point(|&c| c < target) as i64;
        // A fixed permutation of the ranks (7919 is prime to the sizes).
        (rank * 7919) % self.n + 1
    }
}

fn trace(options: &Options, len: usize) -> Vec<Request> {
    let mut rng = Rng(0x5eed);
    let users = Zipf::new(USERS, options.exponent);
    let books = Zipf::new(USERS * BOOKS_PER_USER, options.exponent);
    let cats = Zipf::new(USERS * CATS_PER_USER, options.exponent);
    (0..len)
        .map(|i| {
            let pick = rng.next_f64();
            if pick < options.writes {
                return Request::RenameBook(books.draw(&mut rng), i);
            }
            let read = (pick - options.writes) / (1.0 - options.writes);
            match read {
                r if r < 0.40 => Request::User(users.draw(&mut rng)),
                r if r < 0.65 => Request::Book(books.draw(&mut rng)),
                r if r < 0.80 => Request::UserBooks(users.draw(&mut rng)),
                r if r < 0.90 => Request::Cat(cats.draw(&mut rng)),
                _ => Request::Summary(users.draw(&mut rng)),
            }
        })
        .collect()
}

/// Every entity once: the warm-up.
fn every_entity() -> Vec<Request> {
    let users = (1..=USERS).flat_map(|id| {
        [
            Request::User(id),
            Request::UserBooks(id),
            Request::Summary(id),
        ]
    });
    let books = (1..=USERS * BOOKS_PER_USER).map(Request::Book);
    let cats = (1..=USERS * CATS_PER_USER).map(Request::Cat);
    users.chain(books).chain(cats).collect()
}

impl Request {
    /// Its index in [`KINDS`].
    fn kind(self) -> usize {
        match self {
            Request::User(_) => 0,
            Request::Book(_) => 1,
            Request::UserBooks(_) => 2,
            Request::Cat(_) => 3,
            Request::Summary(_) => 4,
            Request::RenameBook(..) => 5,
        }
    }
}

async fn send(client: &mut Client, request: Request) -> Result<u16, String> {
    let answer = match request {
        Request::User(id) => client.get(&format!("/users/{id}")).await,
        Request::Book(id) => client.get(&format!("/books/{id}")).await,
        Request::UserBooks(id) => client.get(&format!("/users/{id}/books")).await,
        Request::Cat(id) => client.get(&format!("/cats/{id}")).await,
        Request::Summary(id) => client.get(&format!("/users/{id}/summary")).await,
        Request::RenameBook(id, n) => {
            client
                .put(
                    &format!("/books/{id}"),
                    &json!({ "title": format!("book {id} #{n}") }),
                )
                .await
        }
    };
    answer
        .map(|response| response.status)
        .map_err(|error| error.to_string())
}

/// What one replay measured.
struct Replay {
    requests: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// The same, by kind of request.
    by_kind: Vec<Vec<u32>>,
    errors: usize,
}

/// Replay `requests` over `connections` connections until they are done
/// or `limit` has passed.
async fn replay(
    addr: SocketAddr,
    requests: Arc<Vec<Request>>,
    connections: usize,
    limit: Duration,
) -> Replay {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let requests = requests.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            let mut latencies = Vec::new();
            let mut by_kind = vec![Vec::new(); KINDS.len()];
            let mut errors = 0;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&request) = requests.get(i) else {
                    break;
                };
                let sent = Instant::now();
                match send(&mut client, request).await {
                    Ok(200) => {}
                    Ok(status) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("{request:?}: HTTP {status}");
                        }
                    }
                    Err(error) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("{request:?}: {error}");
                        }
                    }
                }
                let micros = sent.elapsed().as_micros();
                let micros = u32::try_from(micros).unwrap_or(u32::MAX);
                latencies.push(micros);
                by_kind[request.kind()].push(micros);
            }
            (latencies, by_kind, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut by_kind = vec![Vec::new(); KINDS.len()];
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, task_by_kind, task_errors)) = task.await {
            latencies_us.extend(latencies);
            for (all, more) in by_kind.iter_mut().zip(task_by_kind) {
                all.extend(more);
            }
            errors += task_errors;
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    for kind in &mut by_kind {
        kind.sort_unstable();
    }
    Replay {
        requests: latencies_us.len(),
        elapsed,
        latencies_us,
        by_kind,
        errors,
    }
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64) * p).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

/// A service process, killed on drop.
struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|error| format!("current_exe: {error}"))?;
    let binary = me.with_file_name(format!("service{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p service --bins)",
            binary.display()
        ))
    }
}

fn start_service(database_url: &str, redis: Option<&RedisServer>) -> Result<Service, String> {
    let mut command = Command::new(service_binary()?);
    command
        .env("LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", database_url)
        .env("DATABASE_SCHEMA", SCHEMA)
        .env("DATABASE_POOL", "16")
        .env("SEED_USERS", "0")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped());
    match redis {
        Some(redis) => command.env("CACHE", "redis").env("REDIS_URL", redis.url()),
        None => command.env("CACHE", "off"),
    };
    let mut child = command
        .spawn()
        .map_err(|error| format!("starting the service: {error}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            return Err("the service exited before listening".to_owned());
        };
        if let Some(rest) = line.strip_prefix("listening on http://") {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            break addr
                .parse()
                .map_err(|error| format!("address {addr}: {error}"))?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Service { child, addr })
}

async fn stats(addr: SocketAddr) -> Result<Stats, String> {
    let response = Client::new(addr)
        .get("/stats")
        .await
        .map_err(|error| error.to_string())?;
    response.json().map_err(|error| error.to_string())
}

/// One phase's figures.
struct Phase {
    requests: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    db_queries: u64,
}

async fn phase(
    connections: usize,
    name: &str,
    database_url: &str,
    redis: Option<&RedisServer>,
    requests: Arc<Vec<Request>>,
    limit: Duration,
) -> Result<Phase, String> {
    let service = start_service(database_url, redis)?;
    let warm = replay(
        service.addr,
        Arc::new(every_entity()),
        connections,
        Duration::from_secs(60),
    )
    .await;
    if warm.errors > 0 {
        return Err(format!("{name}: {} errors while warming up", warm.errors));
    }
    let before = stats(service.addr).await?;
    let run = replay(service.addr, requests, connections, limit).await;
    let after = stats(service.addr).await?;
    if run.errors > 0 {
        return Err(format!("{name}: {} requests failed", run.errors));
    }
    let phase = Phase {
        requests: run.requests,
        rps: run.requests as f64 / run.elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&run.latencies_us, 0.50),
        p99_ms: percentile_ms(&run.latencies_us, 0.99),
        db_queries: after.db_queries - before.db_queries,
    };
    println!(
        "phase cache={name} requests={} seconds={:.1} rps={:.0} p50_ms={:.2} p99_ms={:.2} \
         db_queries={} db_queries_per_request={:.4} hits={} local_hits={} loads={}",
        phase.requests,
        run.elapsed.as_secs_f64(),
        phase.rps,
        phase.p50_ms,
        phase.p99_ms,
        phase.db_queries,
        phase.db_queries as f64 / phase.requests.max(1) as f64,
        after.hits - before.hits,
        after.local_hits - before.local_hits,
        after.loads - before.loads,
    );
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(&run.by_kind)
        .map(|(kind, latencies)| format!("{kind}={:.2}", percentile_ms(latencies, 0.99)))
        .collect();
    println!("phase cache={name} p99_ms_by_kind {}", kinds.join(" "));
    Ok(phase)
}

async fn run(options: Options) -> Result<(), String> {
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    service::db::drop_schema(&database_url, SCHEMA)
        .await
        .map_err(|error| format!("PostgreSQL at {database_url}: {error}"))?;
    let pool = service::db::connect(&database_url, SCHEMA, 2)
        .await
        .map_err(|error| format!("PostgreSQL at {database_url}: {error}"))?;
    service::db::seed(
        &service::db::Db::new(pool.clone()),
        USERS,
        BOOKS_PER_USER,
        CATS_PER_USER,
    )
    .await
    .map_err(|error| format!("seeding: {error}"))?;
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .map_err(|error| format!("ANALYZE: {error}"))?;
    pool.close().await;
    println!(
        "loadtest: {USERS} users, {} books, {} cats; zipf exponent {}; {:.1}% writes; \
         {} connections; {} s per phase",
        USERS * BOOKS_PER_USER,
        USERS * CATS_PER_USER,
        options.exponent,
        options.writes * 100.0,
        options.connections,
        options.seconds
    );

    let limit = Duration::from_secs_f64(options.seconds);
    let full = Arc::new(trace(&options, 2_000_000));
    let off = phase(
        options.connections,
        "off",
        &database_url,
        None,
        full.clone(),
        limit,
    )
    .await?;
    let same = Arc::new(full[..off.requests].to_vec());
    let redis = RedisServer::start();
    let on = phase(
        options.connections,
        "on",
        &database_url,
        Some(&redis),
        same,
        limit,
    )
    .await?;
    drop(redis);
    if on.requests < off.requests {
        println!(
            "note: the cache-on phase served {} of the {} requests within the time bound",
            on.requests, off.requests
        );
    }
    service::db::drop_schema(&database_url, SCHEMA)
        .await
        .map_err(|error| format!("dropping {SCHEMA}: {error}"))?;
    println!(
        "ratios: rps_on/rps_off={:.2} p99_on/p99_off={:.2} db_queries_off/db_queries_on={:.1}",
        on.rps / off.rps,
        on.p99_ms / off.p99_ms,
        off.db_queries as f64 / on.db_queries.max(1) as f64
    );
    if let Some(path) = &options.plot {
        std::fs::write(path, plot(&options, &off, &on))
            .map_err(|error| format!("{}: {error}", path.display()))?;
        println!("plot: {}", path.display());
    }
    println!(
        "loadtest rps_off={:.0} rps_on={:.0} p99_ms_off={:.2} p99_ms_on={:.2} db_queries_off={} db_queries_on={}",
        off.rps, on.rps, off.p99_ms, on.p99_ms, off.db_queries, on.db_queries
    );
    Ok(())
}

/// The three figures, off beside on, as an SVG bar chart (no plotting
/// crate: a few rectangles and labels).
fn plot(options: &Options, off: &Phase, on: &Phase) -> String {
    use std::fmt::Write as _;
    let panels = [
        ("requests per second", off.rps, on.rps, "higher is better"),
        ("p99 latency, ms", off.p99_ms, on.p99_ms, "lower is better"),
        (
            "statements per 1,000 requests",
            off.db_queries as f64 * 1000.0 / off.requests.max(1) as f64,
            on.db_queries as f64 * 1000.0 / on.requests.max(1) as f64,
            "lower is better",
        ),
    ];
    let (width, height, panel_width) = (800, 340, 260);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="22" text-anchor="middle" font-size="15">examples/service, cache off vs on (Redis): zipf {zipf}, {writes:.1}% writes, {requests} requests each</text>
"##,
        x = width / 2,
        zipf = options.exponent,
        writes = options.writes * 100.0,
        requests = off.requests,
    );
    for (i, (title, off_value, on_value, note)) in panels.iter().enumerate() {
        let left = 20 + i * panel_width;
        let top = 90.0;
        let bottom = 290.0;
        let max = off_value.max(*on_value).max(f64::MIN_POSITIVE);
        let _ = write!(
            svg,
            r##"<text x="{cx}" y="52" text-anchor="middle">{title}</text>
<text x="{cx}" y="328" text-anchor="middle" fill="#666" font-size="11">{note}</text>
<line x1="{l}" y1="{bottom}" x2="{r}" y2="{bottom}" stroke="#999"/>
"##,
            cx = left + panel_width / 2 - 10,
            l = left + 20,
            r = left + panel_width - 40,
        );
        for (j, (label, value, color)) in
            [("off", off_value, "#9e9e9e"), ("on", on_value, "#1f77b4")]
                .into_iter()
                .enumerate()
        {
            let bar_height = (bottom - top) * value / max;
            let shown = if *value >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.2}")
            };
            let x = left + 50 + j * 90;
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{y:.1}" width="60" height="{bar_height:.1}" fill="{color}"/>
<text x="{tx}" y="{ly:.1}" text-anchor="middle">{shown}</text>
<text x="{tx}" y="{by}" text-anchor="middle">cache {label}</text>
"##,
                y = bottom - bar_height,
                tx = x + 30,
                ly = bottom - bar_height - 6.0,
                by = bottom + 16.0,
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loadtest: {message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadtest: {message}");
            ExitCode::FAILURE
        }
    }
}
