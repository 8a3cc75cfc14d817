//! Tests for `FaultProxy` between real clients and a real redis-server: a
//! subscriber through the proxy, a publisher straight to the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cacheme_test_support::{FaultProxy, RedisServer};

const CHANNEL: &str = "events";

fn publish(con: &mut redis::Connection, message: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(message)
        .query(con)
        .expect("PUBLISH");
}

/// Receives messages until `end` arrives; returns those before it.
fn receive_until(pubsub: &mut redis::PubSub<'_>, end: &str) -> Vec<String> {
    let mut received = Vec::new();
    loop {
        let message = pubsub.get_message().expect("a message before the timeout");
        let payload: String = message.get_payload().expect("string payload");
        if payload == end {
            return received;
        }
        received.push(payload);
    }
}

/// Publishes `messages`, then an end marker, and returns what arrived.
fn round(
    publisher: &mut redis::Connection,
    pubsub: &mut redis::PubSub<'_>,
    messages: &[String],
    end: &str,
) -> Vec<String> {
    for message in messages {
        publish(publisher, message);
    }
    publish(publisher, end);
    receive_until(pubsub, end)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn resp2_deliveries_are_dropped_duplicated_and_delayed_and_counted() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr());
    assert!(proxy.addr().ip().is_loopback());
    assert_eq!(proxy.upstream(), server.addr());
    let mut publisher = server.connection();
    let mut subscriber = redis::Client::open(proxy.url())
        .expect("url")
        .get_connection()
        .expect("connect through the proxy");
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(CHANNEL).expect("SUBSCRIBE");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    // No faults: everything arrives, in order.
    let sent = names("a", 10);
    assert_eq!(round(&mut publisher, &mut pubsub, &sent, "end-a"), sent);

    // drop_next: exactly the next 3 are lost, without a disconnect.
    proxy.drop_next(3);
    let sent = names("b", 10);
    assert_eq!(
        round(&mut publisher, &mut pubsub, &sent, "end-b"),
        sent[3..]
    );

    // duplicate_next: the next 2 arrive twice.
    proxy.duplicate_next(2);
    let sent = names("c", 3);
    assert_eq!(
        round(&mut publisher, &mut pubsub, &sent, "end-c"),
        ["c0", "c0", "c1", "c1", "c2"]
    );

    // A delay holds each delivery back.
    proxy.set_delay(Duration::from_millis(150));
    let before = Instant::now();
    assert!(round(&mut publisher, &mut pubsub, &names("d", 1), "end-d") == ["d0"]);
    assert!(
        before.elapsed() >= Duration::from_millis(300),
        "two delayed deliveries"
    );
    proxy.set_delay(Duration::ZERO);

    let stats = proxy.stats();
    assert_eq!(stats.deliveries, 10 + 1 + 10 + 1 + 3 + 1 + 2);
    assert_eq!(stats.deliveries_dropped, 3);
    assert_eq!(stats.deliveries_duplicated, 2);
    assert_eq!(stats.deliveries_delayed, 2);
    assert_eq!(
        stats.deliveries_forwarded,
        stats.deliveries - stats.deliveries_dropped
    );
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.open_connections, 1);
    assert_eq!(stats.unparsed_connections, 0);
}

/// The drop rate draws from a seeded generator: the same seed loses the
/// same messages on a fresh proxy.
#[test]
fn a_seeded_drop_rate_is_reproducible() {
    let server = RedisServer::start();
    let mut publisher = server.connection();
    let sent = names("m", 200);
    let run = |seed: u64, publisher: &mut redis::Connection| {
        let proxy = FaultProxy::start(server.addr());
        let mut subscriber = redis::Client::open(proxy.url())
            .expect("url")
            .get_connection()
            .expect("connect");
        let mut pubsub = subscriber.as_pubsub();
        pubsub.subscribe(CHANNEL).expect("SUBSCRIBE");
        pubsub
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        proxy.set_seed(seed);
        proxy.set_drop_rate(0.25);
        for message in &sent {
            publish(publisher, message);
        }
        // Every message must be judged at the rate before it is turned off
        // for the marker, which must not be dropped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.stats().deliveries < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.set_drop_rate(0.0);
        let received = round(publisher, &mut pubsub, &[], "end");
        let stats = proxy.stats();
        assert_eq!(stats.deliveries, 201);
        assert_eq!(stats.deliveries_dropped, 200 - received.len() as u64);
        received
    };
    let first = run(7, &mut publisher);
    let again = run(7, &mut publisher);
    let other = run(8, &mut publisher);
    assert_eq!(first, again, "same seed, same losses");
    assert_ne!(first, other, "another seed, other losses");
    let lost = sent.len() - first.len();
    assert!((20..=80).contains(&lost), "lost {lost} of 200 at 25 %");
}

/// Ordinary replies pass unchanged even when they look like deliveries and
/// every delivery would be dropped.
#[test]
fn replies_that_look_like_messages_are_never_touched() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr());
    proxy.set_drop_rate(1.0);
    proxy.duplicate_next(100);
    let mut con = redis::Client::open(proxy.url())
        .expect("url")
        .get_connection()
        .expect("connect");
    let () = redis::cmd("RPUSH")
        .arg("fake")
        .arg("message")
        .arg(CHANNEL)
        .arg("payload")
        .query::<i64>(&mut con)
        .map(drop)
        .expect("RPUSH");
    for _ in 0..3 {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg("fake")
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .expect("LRANGE");
        assert_eq!(list, ["message", CHANNEL, "payload"]);
    }
    let big = "x".repeat(1 << 20);
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut con)
        .expect("SET");
    let back: String = redis::cmd("GET").arg("big").query(&mut con).expect("GET");
    assert_eq!(back.len(), big.len());
    let stats = proxy.stats();
    assert_eq!(stats.deliveries, 0);
    assert!(stats.bytes_to_server > 1 << 20 && stats.bytes_to_client > 1 << 20);
}

/// A minimal RESP3 client on a raw socket: the proxy must recognise push
/// frames, and leave a subscribed RESP3 connection's ordinary replies alone.
#[test]
fn resp3_pushes_are_deliveries_and_arrays_are_not() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr());
    let mut publisher = server.connection();
    let mut client = Resp3Client::connect(proxy.addr());
    client.send(&["HELLO", "3"]);
    assert!(client.frame().starts_with('%'), "HELLO 3 answers a map");
    client.send(&["SUBSCRIBE", CHANNEL]);
    assert!(client.frame().starts_with(">3\r\n$9\r\nsubscribe"));
    let () = redis::cmd("RPUSH")
        .arg("fake")
        .arg("message")
        .arg(CHANNEL)
        .arg("payload")
        .query::<i64>(&mut publisher)
        .map(drop)
        .expect("RPUSH");

    proxy.drop_next(1);
    proxy.duplicate_next(1);
    publish(&mut publisher, "lost");
    publish(&mut publisher, "twice");
    let push = |m: &str| {
        format!(
            ">3\r\n$7\r\nmessage\r\n$6\r\n{CHANNEL}\r\n${}\r\n{m}\r\n",
            m.len()
        )
    };
    assert_eq!(client.frame(), push("twice"));
    assert_eq!(client.frame(), push("twice"));

    // A RESP3 subscriber may run ordinary commands; their arrays are not
    // deliveries, even with every delivery being dropped.
    proxy.set_drop_rate(1.0);
    client.send(&["LRANGE", "fake", "0", "-1"]);
    assert_eq!(
        client.frame(),
        format!("*3\r\n$7\r\nmessage\r\n$6\r\n{CHANNEL}\r\n$7\r\npayload\r\n")
    );
    let stats = proxy.stats();
    assert_eq!((stats.deliveries, stats.deliveries_dropped), (2, 1));
    assert_eq!(stats.deliveries_duplicated, 1);
}

/// Pattern and sharded deliveries count too, in RESP2.
#[test]
fn resp2_pmessage_and_smessage_are_deliveries() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr());
    let mut publisher = server.connection();
    let mut client = Resp3Client::connect(proxy.addr());
    client.send(&["PSUBSCRIBE", "ev*"]);
    assert!(client.frame().starts_with("*3\r\n$10\r\npsubscribe"));
    client.send(&["SSUBSCRIBE", "shard"]);
    assert!(client.frame().starts_with("*3\r\n$10\r\nssubscribe"));

    proxy.drop_next(1);
    publish(&mut publisher, "lost");
    publish(&mut publisher, "kept");
    assert_eq!(
        client.frame(),
        format!("*4\r\n$8\r\npmessage\r\n$3\r\nev*\r\n$6\r\n{CHANNEL}\r\n$4\r\nkept\r\n")
    );
    proxy.duplicate_next(1);
    let _: i64 = redis::cmd("SPUBLISH")
        .arg("shard")
        .arg("s1")
        .query(&mut publisher)
        .expect("SPUBLISH");
    let smessage = "*3\r\n$8\r\nsmessage\r\n$5\r\nshard\r\n$2\r\ns1\r\n";
    assert_eq!(client.frame(), smessage);
    assert_eq!(client.frame(), smessage);
    let stats = proxy.stats();
    assert_eq!(
        (
            stats.deliveries,
            stats.deliveries_dropped,
            stats.deliveries_duplicated
        ),
        (3, 1, 1)
    );
}

#[test]
fn stall_leaves_connections_open_and_cut_closes_them() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr());
    let client = redis::Client::open(proxy.url()).expect("url");
    let mut con = client.get_connection().expect("connect");
    con.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");

    proxy.stall();
    assert!(proxy.is_stalled());
    let err = redis::cmd("PING")
        .query::<String>(&mut con)
        .expect_err("a stalled proxy answers nothing");
    assert!(err.is_timeout(), "half-open, not closed: {err:?}");
    proxy.resume();
    let mut fresh = client.get_connection().expect("connect after resume");
    let pong: String = redis::cmd("PING").query(&mut fresh).expect("PING");
    assert_eq!(pong, "PONG");

    let open = proxy.stats().open_connections;
    assert_eq!(open, 2);
    assert_eq!(proxy.cut_all(), 2);
    let err = redis::cmd("PING")
        .query::<String>(&mut fresh)
        .expect_err("a cut connection is closed");
    assert!(!err.is_timeout(), "closed, not stalled: {err:?}");
    let stats = proxy.stats();
    assert_eq!((stats.connections_cut, stats.open_connections), (2, 0));

    // The proxy keeps accepting connections after a cut.
    let mut again = client.get_connection().expect("connect after cut");
    let pong: String = redis::cmd("PING").query(&mut again).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
#[should_panic(expected = "only forwards to loopback")]
fn the_proxy_refuses_non_loopback_upstreams() {
    let _ = FaultProxy::start(SocketAddr::from(([192, 0, 2, 1], 6380)));
}

/// Just enough of a RESP3 client to read whole frames as text.
struct Resp3Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Resp3Client {
    fn connect(addr: SocketAddr) -> Resp3Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Resp3Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.writer.write_all(out.as_bytes()).expect("write");
    }

    /// One whole frame, as the text received.
    fn frame(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a frame");
        let count = || line[1..].trim_end().parse::<i64>().expect("a length");
        match line.as_bytes()[0] {
            b'$' | b'=' | b'!' => {
                let mut body = vec![0; count() as usize + 2];
                self.reader.read_exact(&mut body).expect("read the body");
                line + &String::from_utf8(body).expect("utf-8")
            }
            b'*' | b'>' | b'~' => {
                let n = count();
                (0..n).fold(line, |acc, _| acc + &self.frame())
            }
            b'%' => {
                let n = count() * 2;
                (0..n).fold(line, |acc, _| acc + &self.frame())
            }
            _ => line,
        }
    }
}
