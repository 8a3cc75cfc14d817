//! A RESP-aware TCP proxy that loses, delays and duplicates pub/sub
//! messages, and stalls or cuts connections.
//!
//! [`FaultProxy`] sits between a client and a `redis-server` on loopback.
//! Bytes from the client go to the server unchanged. Bytes from the server
//! are cut into RESP2/RESP3 frames; pub/sub deliveries (`message`,
//! `pmessage`, `smessage`, as RESP2 arrays or RESP3 pushes) are subject to
//! the faults set on the proxy, and every other frame is forwarded as it
//! came, in order.
//!
//! A RESP2 array counts as a delivery only while the connection is in
//! RESP2 subscribed mode: after the client sent a `SUBSCRIBE`, `PSUBSCRIBE`
//! or `SSUBSCRIBE` and while the server's RESP2 confirmations report a
//! non-zero subscription count (until `RESET` or the last unsubscribe), when
//! Redis answers nothing but pub/sub frames. In RESP3 only pushes are
//! deliveries, so the replies to ordinary commands that a subscribed RESP3
//! connection may send are never touched, whatever they contain. A connection whose server stream cannot be parsed (RESP3
//! streamed strings, which Redis does not send) is forwarded untouched from
//! then on and counted in [`ProxyStats::unparsed_connections`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::resp::{self, FrameKind};

/// The seed of the drop-rate generator until [`FaultProxy::set_seed`].
pub const DEFAULT_SEED: u64 = 0x00ca_c4e3_5eed;

/// How long the proxy waits to connect to its upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a stalled forwarding thread checks whether its connection
/// was cut.
const STALL_CHECK: Duration = Duration::from_millis(20);

/// A TCP proxy on a free `127.0.0.1` port in front of a loopback
/// `redis-server`, with faults for pub/sub messages and connections.
///
/// Every connection to [`addr`](Self::addr) gets its own connection to the
/// upstream and two forwarding threads. Faults apply to all connections,
/// current and future; the drop-rate generator is shared, so decisions are
/// reproducible for one subscriber connection with a given
/// [seed](Self::set_seed).
///
/// Dropping the proxy closes its listener and every connection.
///
/// ```no_run
/// use cacheme_test_support::{FaultProxy, RedisServer};
///
/// let server = RedisServer::start();
/// let proxy = FaultProxy::start(server.addr());
/// // A subscriber connects through the proxy, a publisher directly.
/// let subscriber = redis::Client::open(proxy.url()).expect("valid URL");
/// proxy.drop_next(1); // the next delivery is lost, without a disconnect
/// proxy.set_drop_rate(0.01); // then 1 % of them, reproducibly
/// # drop(subscriber);
/// assert_eq!(proxy.stats().deliveries_dropped, 0);
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// What a [`FaultProxy`] has done so far.
///
/// Every counter is updated before the bytes it counts leave the proxy, so
/// a client that has received something also sees it counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Client connections currently open.
    pub open_connections: u64,
    /// Connections closed by [`FaultProxy::cut_all`].
    pub connections_cut: u64,
    /// Client connections that were closed because the upstream could not be
    /// reached.
    pub upstream_failures: u64,
    /// Connections whose server stream could not be parsed as RESP and was
    /// forwarded untouched from then on.
    pub unparsed_connections: u64,
    /// Bytes forwarded from clients to the server.
    pub bytes_to_server: u64,
    /// Bytes forwarded from the server to clients.
    pub bytes_to_client: u64,
    /// Server frames forwarded to clients, deliveries and duplicates included.
    pub frames_to_client: u64,
    /// Pub/sub deliveries seen from the server.
    pub deliveries: u64,
    /// Deliveries forwarded (once each; duplicates are counted apart).
    pub deliveries_forwarded: u64,
    /// Deliveries dropped.
    pub deliveries_dropped: u64,
    /// Extra copies of deliveries sent.
    pub deliveries_duplicated: u64,
    /// Deliveries held back by [`FaultProxy::set_delay`] before forwarding.
    pub deliveries_delayed: u64,
}

impl FaultProxy {
    /// Starts a proxy on a free `127.0.0.1` port forwarding to `upstream`.
    ///
    /// # Panics
    ///
    /// If `upstream` is not a loopback address (the proxy is for local test
    /// servers only), or no loopback port can be bound.
    #[track_caller]
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        assert!(
            upstream.ip().is_loopback(),
            "FaultProxy only forwards to loopback servers, not to {upstream}"
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("FaultProxy cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("FaultProxy cannot read its bound port: {e}"));
        let shared = Arc::new(Shared::new());
        let accept_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || accept_loop(&listener, upstream, &shared))
                .unwrap_or_else(|e| panic!("FaultProxy cannot spawn its accept thread: {e}"))
        };
        FaultProxy {
            addr,
            upstream,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// The proxy's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:PORT/`, for a client that should go through the
    /// proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Restarts the drop-rate generator from `seed` (it starts from
    /// [`DEFAULT_SEED`]).
    pub fn set_seed(&self, seed: u64) {
        self.shared.faults().rng = SplitMix64(seed);
    }

    /// Drops each delivery with probability `rate`, drawn from the seeded
    /// generator. `0.0` turns it off.
    ///
    /// # Panics
    ///
    /// If `rate` is not within `0.0..=1.0`.
    #[track_caller]
    pub fn set_drop_rate(&self, rate: f64) {
        assert!(
            (0.0..=1.0).contains(&rate),
            "drop rate must be within 0.0..=1.0, got {rate}"
        );
        self.shared.faults().drop_rate = rate;
    }

    /// Drops the next `n` deliveries (on any connection), on top of the drop
    /// rate. Replaces an earlier count.
    pub fn drop_next(&self, n: u64) {
        self.shared.faults().drop_next = n;
    }

    /// Holds every delivery back for `delay` before forwarding it.
    /// Everything the server sends after it on that connection waits too,
    /// as on a slow link. `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.faults().delay = delay;
    }

    /// Sends each of the next `n` forwarded deliveries twice. Replaces an
    /// earlier count.
    pub fn duplicate_next(&self, n: u64) {
        self.shared.faults().duplicate_next = n;
    }

    /// Turns every delivery fault off: drop rate, drop and duplicate counts,
    /// delay. Does not [`resume`](Self::resume) a stall.
    pub fn clear_faults(&self) {
        let mut faults = self.shared.faults();
        faults.drop_rate = 0.0;
        faults.drop_next = 0;
        faults.duplicate_next = 0;
        faults.delay = Duration::ZERO;
    }

    /// Stops forwarding in both directions on every connection, without
    /// closing anything: clients see a half-open connection whose requests
    /// are never answered. New connections are accepted but stall too.
    /// Bytes already read are held and delivered on [`resume`](Self::resume).
    pub fn stall(&self) {
        *self.shared.stalled() = true;
    }

    /// Ends a [`stall`](Self::stall).
    pub fn resume(&self) {
        *self.shared.stalled() = false;
        self.shared.resumed.notify_all();
    }

    /// Whether the proxy is [stalled](Self::stall).
    pub fn is_stalled(&self) -> bool {
        *self.shared.stalled()
    }

    /// Closes both sides of every open connection (clients see the
    /// connection reset or closed) and returns how many were cut. The proxy
    /// keeps accepting new connections.
    pub fn cut_all(&self) -> usize {
        let connections: Vec<Connection> = std::mem::take(&mut *self.shared.connections());
        let cut = connections
            .iter()
            .filter(|c| c.close(&self.shared.counters))
            .count();
        self.shared
            .counters
            .connections_cut
            .fetch_add(cut as u64, Ordering::Relaxed);
        self.shared.resumed.notify_all();
        for connection in connections {
            connection.join();
        }
        cut
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&c.connections),
            open_connections: get(&c.open_connections),
            connections_cut: get(&c.connections_cut),
            upstream_failures: get(&c.upstream_failures),
            unparsed_connections: get(&c.unparsed_connections),
            bytes_to_server: get(&c.bytes_to_server),
            bytes_to_client: get(&c.bytes_to_client),
            frames_to_client: get(&c.frames_to_client),
            deliveries: get(&c.deliveries),
            deliveries_forwarded: get(&c.deliveries_forwarded),
            deliveries_dropped: get(&c.deliveries_dropped),
            deliveries_duplicated: get(&c.deliveries_duplicated),
            deliveries_delayed: get(&c.deliveries_delayed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept_thread) = self.accept_thread.take() {
            let _ = accept_thread.join();
        }
        self.resume();
        self.cut_all();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("stalled", &self.is_stalled())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// State shared by the handle, the accept thread and the forwarding
/// threads.
struct Shared {
    faults: Mutex<Faults>,
    stalled: Mutex<bool>,
    resumed: Condvar,
    connections: Mutex<Vec<Connection>>,
    counters: Counters,
    shutting_down: AtomicBool,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            faults: Mutex::new(Faults {
                drop_rate: 0.0,
                drop_next: 0,
                duplicate_next: 0,
                delay: Duration::ZERO,
                rng: SplitMix64(DEFAULT_SEED),
            }),
            stalled: Mutex::new(false),
            resumed: Condvar::new(),
            connections: Mutex::new(Vec::new()),
            counters: Counters::default(),
            shutting_down: AtomicBool::new(false),
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stalled(&self) -> MutexGuard<'_, bool> {
        self.stalled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks while the proxy is stalled; `false` if the connection was
    /// closed meanwhile.
    fn wait_while_stalled(&self, closed: &AtomicBool) -> bool {
        let mut stalled = self.stalled();
        while *stalled && !closed.load(Ordering::SeqCst) {
            stalled = self
                .resumed
                .wait_timeout(stalled, STALL_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        !closed.load(Ordering::SeqCst)
    }
}

struct Faults {
    drop_rate: f64,
    drop_next: u64,
    duplicate_next: u64,
    delay: Duration,
    rng: SplitMix64,
}

/// What to do with one delivery.
struct Verdict {
    drop: bool,
    duplicate: bool,
    delay: Duration,
}

impl Faults {
    fn judge(&mut self) -> Verdict {
        let mut drop = false;
        if self.drop_next > 0 {
            self.drop_next -= 1;
            drop = true;
        } else if self.drop_rate > 0.0 {
            drop = self.rng.next_f64() < self.drop_rate;
        }
        let duplicate = !drop && self.duplicate_next > 0;
        if duplicate {
            self.duplicate_next -= 1;
        }
        Verdict {
            drop,
            duplicate,
            delay: if drop { Duration::ZERO } else { self.delay },
        }
    }
}

/// SplitMix64: tiny, seedable, good enough to pick messages to drop.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    open_connections: AtomicU64,
    connections_cut: AtomicU64,
    upstream_failures: AtomicU64,
    unparsed_connections: AtomicU64,
    bytes_to_server: AtomicU64,
    bytes_to_client: AtomicU64,
    frames_to_client: AtomicU64,
    deliveries: AtomicU64,
    deliveries_forwarded: AtomicU64,
    deliveries_dropped: AtomicU64,
    deliveries_duplicated: AtomicU64,
    deliveries_delayed: AtomicU64,
}

/// One proxied connection: both sockets, so that it can be cut, and its
/// forwarding threads.
struct Connection {
    client: TcpStream,
    server: TcpStream,
    closed: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Connection {
    /// Shuts both sockets down; `true` if it was still open.
    fn close(&self, counters: &Counters) -> bool {
        let was_open = close_once(&self.closed, counters);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        was_open
    }

    fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            // Out of file descriptors, for example: do not spin.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        if let Err(()) = open_connection(client, upstream, shared) {
            shared
                .counters
                .upstream_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        // Reap connections whose threads are done.
        let finished: Vec<Connection> = {
            let mut connections = shared.connections();
            let (done, open) = std::mem::take(&mut *connections)
                .into_iter()
                .partition(|c: &Connection| c.threads.iter().all(JoinHandle::is_finished));
            *connections = open;
            done
        };
        finished.into_iter().for_each(Connection::join);
    }
}

fn open_connection(
    client: TcpStream,
    upstream: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<(), ()> {
    let server = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT).map_err(|_| ())?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_in, client_out) = (client.try_clone(), client.try_clone());
    let (server_in, server_out) = (server.try_clone(), server.try_clone());
    let (Ok(client_in), Ok(client_out), Ok(server_in), Ok(server_out)) =
        (client_in, client_out, server_in, server_out)
    else {
        return Err(());
    };
    shared
        .counters
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    let closed = Arc::new(AtomicBool::new(false));
    // Set by the client side when it sends a subscribe command, before the
    // command reaches the server.
    let subscribing = Arc::new(AtomicBool::new(false));
    let mut connection = Connection {
        client,
        server,
        closed: Arc::clone(&closed),
        threads: Vec::with_capacity(2),
    };
    let up = {
        let (shared, closed, subscribing) = (
            Arc::clone(shared),
            Arc::clone(&closed),
            Arc::clone(&subscribing),
        );
        thread::Builder::new()
            .name("fault-proxy-up".into())
            .spawn(move || forward_to_server(client_in, server_out, &shared, &closed, &subscribing))
    };
    let down = {
        let (shared, closed) = (Arc::clone(shared), Arc::clone(&closed));
        thread::Builder::new()
            .name("fault-proxy-down".into())
            .spawn(move || forward_to_client(server_in, client_out, &shared, &closed, &subscribing))
    };
    connection.threads.extend(up.ok());
    connection.threads.extend(down.ok());
    if connection.threads.len() < 2 {
        connection.close(&shared.counters);
        connection.join();
        return Err(());
    }
    shared.connections().push(connection);
    Ok(())
}

/// Marks a connection closed; `true` (and one fewer open connection) for
/// the first caller only.
fn close_once(closed: &AtomicBool, counters: &Counters) -> bool {
    let first = !closed.swap(true, Ordering::SeqCst);
    if first {
        counters.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
    first
}

/// Closes both sockets when one direction ends, like a proxy that sees
/// one side go away.
fn end_connection(from: &TcpStream, to: &TcpStream, shared: &Shared, closed: &AtomicBool) {
    close_once(closed, &shared.counters);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Client to server: bytes unchanged; the commands are only looked at
/// until the first subscribe command.
fn forward_to_server(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Shared,
    closed: &AtomicBool,
    subscribing: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut parsing = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if parsing {
            pending.extend_from_slice(&buf[..n]);
            parsing = !scan_for_subscribe(&mut pending, subscribing);
        }
        if !shared.wait_while_stalled(closed) {
            break;
        }
        // Counted before they leave, so that whoever sees their effect
        // also sees them counted.
        shared
            .counters
            .bytes_to_server
            .fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    end_connection(&from, &to, shared, closed);
}

/// Consumes the complete commands in `pending`; `true` once a subscribe
/// command was seen (or the stream is not RESP), after which the client
/// side is no longer parsed.
fn scan_for_subscribe(pending: &mut Vec<u8>, subscribing: &AtomicBool) -> bool {
    let mut at = 0;
    let done = loop {
        match resp::command_len(&pending[at..]) {
            Ok(Some(len)) => {
                let name = resp::command_name(&pending[at..at + len]);
                at += len;
                if matches!(
                    name.as_deref(),
                    Some(b"subscribe" | b"psubscribe" | b"ssubscribe")
                ) {
                    subscribing.store(true, Ordering::SeqCst);
                    break true;
                }
            }
            Ok(None) => break false,
            // Not a client we understand: never treat its RESP2 arrays as
            // deliveries (the flag stays unset).
            Err(_) => break true,
        }
    };
    if done {
        pending.clear();
    } else {
        pending.drain(..at);
    }
    done
}

/// The pub/sub state of one connection, as the server reports it.
#[derive(Default)]
struct Subscriptions {
    classic: i64,
    shard: i64,
}

impl Subscriptions {
    fn subscribed(&self) -> bool {
        self.classic > 0 || self.shard > 0
    }
}

/// Server to client: frame by frame, with the delivery faults applied.
fn forward_to_client(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Shared,
    closed: &AtomicBool,
    subscribing: &AtomicBool,
) {
    let counters = &shared.counters;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut subscriptions = Subscriptions::default();
    let mut raw = false;
    let result: io::Result<()> = (|| {
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if !shared.wait_while_stalled(closed) {
                return Ok(());
            }
            if raw {
                counters
                    .bytes_to_client
                    .fetch_add(n as u64, Ordering::Relaxed);
                to.write_all(&buf[..n])?;
                continue;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut at = 0;
            loop {
                let len = match resp::frame_len(&pending[at..]) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(_) => {
                        // Forward the rest untouched, now and from now on.
                        raw = true;
                        counters
                            .unparsed_connections
                            .fetch_add(1, Ordering::Relaxed);
                        out.extend_from_slice(&pending[at..]);
                        at = pending.len();
                        break;
                    }
                };
                let frame = &pending[at..at + len];
                at += len;
                let is_delivery = match resp::classify(frame) {
                    FrameKind::Delivery { push, .. } => push || subscriptions.subscribed(),
                    FrameKind::Subscriptions { shard, count, push } => {
                        // RESP2 only: in RESP3 the connection may still run
                        // ordinary commands, whose arrays are never
                        // deliveries.
                        if !push && subscribing.load(Ordering::SeqCst) {
                            if shard {
                                subscriptions.shard = count;
                            } else {
                                subscriptions.classic = count;
                            }
                        }
                        false
                    }
                    FrameKind::Reset => {
                        subscriptions = Subscriptions::default();
                        false
                    }
                    FrameKind::Other => false,
                };
                if !is_delivery {
                    out.extend_from_slice(frame);
                    counters.frames_to_client.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counters.deliveries.fetch_add(1, Ordering::Relaxed);
                let verdict = shared.faults().judge();
                if verdict.drop {
                    counters.deliveries_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if !verdict.delay.is_zero() {
                    // What came before the delivery is not held back.
                    write_out(&mut to, &mut out, counters)?;
                    thread::sleep(verdict.delay);
                    counters.deliveries_delayed.fetch_add(1, Ordering::Relaxed);
                }
                out.extend_from_slice(frame);
                counters.frames_to_client.fetch_add(1, Ordering::Relaxed);
                counters
                    .deliveries_forwarded
                    .fetch_add(1, Ordering::Relaxed);
                if verdict.duplicate {
                    out.extend_from_slice(frame);
                    counters.frames_to_client.fetch_add(1, Ordering::Relaxed);
                    counters
                        .deliveries_duplicated
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            pending.drain(..at);
            write_out(&mut to, &mut out, counters)?;
        }
    })();
    let _ = result;
    end_connection(&from, &to, shared, closed);
}

fn write_out(to: &mut TcpStream, out: &mut Vec<u8>, counters: &Counters) -> io::Result<()> {
    if !out.is_empty() {
        counters
            .bytes_to_client
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        to.write_all(out)?;
        out.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_reproducible_and_roughly_uniform() {
        let draws = |seed| {
            let mut rng = SplitMix64(seed);
            (0..10_000).map(|_| rng.next_f64()).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let below = a.iter().filter(|&&x| x < 0.1).count();
        assert!((800..1200).contains(&below), "{below} of 10000 below 0.1");
    }

    #[test]
    fn drop_next_comes_before_the_rate_and_duplicates_are_never_dropped() {
        let mut faults = Faults {
            drop_rate: 0.0,
            drop_next: 2,
            duplicate_next: 1,
            delay: Duration::from_millis(5),
            rng: SplitMix64(1),
        };
        let verdicts: Vec<(bool, bool)> = (0..4)
            .map(|_| {
                let v = faults.judge();
                (v.drop, v.duplicate)
            })
            .collect();
        assert_eq!(
            verdicts,
            [(true, false), (true, false), (false, true), (false, false)]
        );
    }

    #[test]
    fn client_commands_are_scanned_until_a_subscribe() {
        let flag = AtomicBool::new(false);
        let mut pending = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET".to_vec();
        assert!(!scan_for_subscribe(&mut pending, &flag));
        assert_eq!(pending, b"*2\r\n$3\r\nGET");
        pending.extend_from_slice(b"\r\n$1\r\nk\r\nSUBSCRIBE ch\r\n");
        assert!(scan_for_subscribe(&mut pending, &flag));
        assert!(flag.load(Ordering::SeqCst));
        assert!(pending.is_empty());
    }
}
