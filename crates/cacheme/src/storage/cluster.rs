//! Redis Cluster behind the same [`Op`](super::Op)s as one server.
//!
//! Every op touches one hash slot (a key and its lease share the `{key}`
//! hash tag; the invalidation sequence, log and channel share `{inv}`), so
//! each command is routed by its first key, and redis-rs's cluster
//! connections follow `MOVED` and `ASK` redirections, retry on `TRYAGAIN` and
//! `CLUSTERDOWN`, and refresh the slot map after a failover. What this module
//! adds:
//!
//! - A pipeline of several keys (the invalidation of a page of keys) would be
//!   refused as cross-slot: it is split by hash slot, the slot groups are
//!   sent concurrently (each node's share multiplexed on its connection) and
//!   the replies are put back in order.
//! - An op that names a node ([`Op::node`](super::Op::node): a `SCAN` page of
//!   one primary) is routed to that node's address.
//! - Blocking calls use a small pool of synchronous cluster connections;
//!   their pipelines are redis-rs cluster pipelines (split by node).
//!
//! Events (fills' wake-ups and invalidations) use classic pub/sub, which a
//! cluster broadcasts to every node: the subscriber listens on one node and
//! moves to the next one when that node fails (see `crate::subscriber`).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

use super::Request;

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// How many idle blocking cluster connections are kept (each holds one
/// connection per node, so fewer than for one server).
const BLOCKING_IDLE: usize = 4;

/// Where a cluster store's commands go.
pub(crate) struct ClusterSource {
    /// The client made from the URLs (for blocking calls, and for async
    /// calls when the application gave no connection).
    client: Option<redis::cluster::ClusterClient>,
    /// The async connection: the application's, or made on first use.
    connection: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
    blocking: Mutex<Vec<redis::cluster::ClusterConnection>>,
    /// One plain client per initial node: the subscriber's candidates.
    nodes: Vec<redis::Client>,
    /// Nodes the subscriber learnt from the cluster: where new blocking
    /// connections start when the initial nodes are gone.
    learnt: Mutex<Vec<redis::ConnectionInfo>>,
}

impl ClusterSource {
    /// A source from the cluster's initial node URLs and, optionally, the
    /// application's own async connection.
    pub(crate) fn new(
        urls: &[String],
        connection: Option<redis::cluster_async::ClusterConnection>,
    ) -> RedisResult<Self> {
        let client = if urls.is_empty() {
            None
        } else {
            Some(cluster_client(urls.iter().map(String::as_str))?)
        };
        let nodes = urls
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(ClusterSource {
            client,
            connection: connection.map_or_else(tokio::sync::OnceCell::new, |c| {
                tokio::sync::OnceCell::new_with(Some(c))
            }),
            blocking: Mutex::new(Vec::new()),
            nodes,
            learnt: Mutex::new(Vec::new()),
        })
    }

    /// Remember the nodes the subscriber knows (see [`learn_nodes`]).
    pub(crate) fn note_nodes(&self, clients: &[redis::Client]) {
        let infos = clients
            .iter()
            .map(|client| client.get_connection_info().clone())
            .collect();
        *self.learnt.lock().unwrap_or_else(PoisonError::into_inner) = infos;
    }

    /// A new blocking cluster connection: from the initial nodes, or, when
    /// none of them answers, from the nodes learnt since.
    fn connect_blocking(
        &self,
        client: &redis::cluster::ClusterClient,
    ) -> RedisResult<redis::cluster::ClusterConnection> {
        let error = match client.get_connection() {
            Ok(conn) => return Ok(conn),
            Err(error) => error,
        };
        let learnt = self
            .learnt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if learnt.is_empty() {
            return Err(error);
        }
        cluster_client(learnt)?.get_connection()
    }

    /// Whether blocking calls can run (the cluster was given by URLs).
    pub(crate) fn can_block(&self) -> bool {
        self.client.is_some()
    }

    /// The nodes the subscriber may listen on.
    pub(crate) fn subscriber_clients(&self) -> Vec<redis::Client> {
        self.nodes.clone()
    }

    async fn async_connection(&self) -> RedisResult<redis::cluster_async::ClusterConnection> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                match &self.client {
                    Some(client) => client.get_async_connection().await,
                    None => Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "no cluster connection and no cluster URLs",
                    ))),
                }
            })
            .await?;
        Ok(connection.clone())
    }

    /// Send a request (to `node` when the op names one) over the async
    /// cluster connection.
    pub(crate) async fn send_async(
        &self,
        request: &Request,
        node: Option<&str>,
        written: &[String],
    ) -> RedisResult<Value> {
        let mut conn = self.async_connection().await?;
        if let (Request::Command(cmd), false) = (request, written.is_empty()) {
            // To the primaries of the slots written, each on its connection.
            let sends = slots_of(written).into_iter().map(|slot| {
                let (mut conn, cmd) = (conn.clone(), cmd.clone());
                async move { conn.route_command(cmd, to_slot(slot)).await }
            });
            return smallest(futures_util::future::join_all(sends).await);
        }
        match (request, node) {
            (Request::Command(cmd), Some(node)) => {
                conn.route_command(cmd.clone(), by_address(node)?).await
            }
            (Request::Command(cmd), None) => cmd.query_async(&mut conn).await,
            (Request::Pipeline(pipe), _) => {
                let groups = by_slot(pipe);
                if let [(_, commands)] = groups.as_slice()
                    && commands.len() == pipe.len()
                {
                    return pipe.query_async(&mut conn).await;
                }
                let sends = groups.iter().map(|(_, commands)| {
                    let mut conn = conn.clone();
                    let group = pipeline_of(pipe, commands);
                    async move { group.query_async::<Vec<Value>>(&mut conn).await }
                });
                let replies = futures_util::future::join_all(sends).await;
                reassemble(pipe.len(), &groups, replies)
            }
        }
    }

    /// Send a request over a blocking cluster connection whose socket
    /// timeouts are `timeout`.
    pub(crate) fn send_blocking(
        &self,
        request: &Request,
        node: Option<&str>,
        written: &[String],
        timeout: Duration,
    ) -> RedisResult<Value> {
        let client = self.client.as_ref().ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::Client,
                "blocking calls need the cluster's URLs",
            ))
        })?;
        let idle = self
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect_blocking(client)?,
        };
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        let reply = match (request, node) {
            (Request::Command(cmd), _) if !written.is_empty() => smallest(
                slots_of(written)
                    .into_iter()
                    .map(|slot| conn.route_command(cmd, to_slot(slot)))
                    .collect(),
            ),
            (Request::Command(cmd), Some(node)) => conn.route_command(cmd, by_address(node)?),
            (Request::Command(cmd), None) => cmd.query(&mut conn),
            (Request::Pipeline(pipe), _) => {
                // The synchronous connection pipelines only through a
                // cluster pipeline, which sends each node its commands.
                let mut cluster_pipe = redis::cluster::cluster_pipe();
                for cmd in pipe.cmd_iter() {
                    cluster_pipe.add_command(cmd.clone());
                }
                cluster_pipe
                    .query::<Vec<Value>>(&mut conn)
                    .map(Value::Array)
            }
        };
        if reply.is_ok() {
            let mut idle = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < BLOCKING_IDLE {
                idle.push(conn);
            }
        }
        reply
    }
}

/// A cluster client with our retry settings. Redirections and reconnects
/// are retried within our own per-operation timeout, which bounds them.
fn cluster_client<T: redis::IntoConnectionInfo>(
    nodes: impl IntoIterator<Item = T>,
) -> RedisResult<redis::cluster::ClusterClient> {
    redis::cluster::ClusterClient::builder(nodes)
        .retries(8)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .connection_timeout(Duration::from_secs(1))
        .build()
}

/// The distinct hash slots of `keys`.
fn slots_of(keys: &[String]) -> Vec<u16> {
    let mut slots: Vec<u16> = keys.iter().map(|key| hash_slot(key.as_bytes())).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Route to the primary serving `slot`.
fn to_slot(slot: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
        redis::cluster_routing::Route::new(slot, redis::cluster_routing::SlotAddr::Master),
    ))
}

/// The smallest of integer replies (how many replicas acknowledged, per
/// primary); the first error if any.
fn smallest(replies: Vec<RedisResult<Value>>) -> RedisResult<Value> {
    let mut least: Option<i64> = None;
    for reply in replies {
        let count: i64 = redis::from_redis_value(reply?)?;
        least = Some(least.map_or(count, |least| least.min(count)));
    }
    Ok(Value::Int(least.unwrap_or(0)))
}

/// Route to the node at `host:port`.
fn by_address(node: &str) -> RedisResult<RoutingInfo> {
    let invalid = || {
        RedisError::from((
            redis::ErrorKind::Client,
            "a cluster node address is not host:port",
            node.to_owned(),
        ))
    };
    let (host, port) = node.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse().map_err(|_| invalid())?;
    Ok(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    }))
}

/// The commands of a pipeline grouped by the hash slot of their first key
/// (`None`: keyless), each group in pipeline order, groups by first command.
fn by_slot(pipe: &Pipeline) -> Vec<(Option<u16>, Vec<usize>)> {
    let mut groups: Vec<(Option<u16>, Vec<usize>)> = Vec::new();
    for (index, cmd) in pipe.cmd_iter().enumerate() {
        let slot = first_key(cmd).map(hash_slot);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, commands)) => commands.push(index),
            None => groups.push((slot, vec![index])),
        }
    }
    groups
}

/// A pipeline of some of `pipe`'s commands. Its errors are replies (so that
/// a batch's per-op errors stay per op); see [`reassemble`].
fn pipeline_of(pipe: &Pipeline, commands: &[usize]) -> Pipeline {
    let mut group = redis::pipe();
    group.ignore_errors();
    for (index, cmd) in pipe.cmd_iter().enumerate() {
        if commands.contains(&index) {
            group.add_command(cmd.clone());
        }
    }
    group
}

/// The replies of the slot groups, back in the pipeline's order; the first
/// error if a group failed, or if a command met `NOSCRIPT` (so that the
/// request is sent again with the scripts' bodies, as on one server). Other
/// errors stay in the array: an op that reads several replies fails on
/// them, a batch judges each.
fn reassemble(
    len: usize,
    groups: &[(Option<u16>, Vec<usize>)],
    replies: Vec<RedisResult<Vec<Value>>>,
) -> RedisResult<Value> {
    let mut ordered = vec![Value::Nil; len];
    for ((_, commands), reply) in groups.iter().zip(replies) {
        for (index, value) in commands.iter().zip(reply?) {
            if let Value::ServerError(error) = &value
                && error.kind() == Some(redis::ServerErrorKind::NoScript)
            {
                return Err(error.clone().into());
            }
            ordered[*index] = value;
        }
    }
    Ok(Value::Array(ordered))
}

/// The first key of one of our commands: the first of `EVAL`/`EVALSHA`'s
/// keys, else the first argument (`GET`, `SET`, `XRANGE`...). `None` for
/// keyless commands (`WAIT`, `SCAN`, `CLUSTER ...`).
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => bytes,
        _ => b"0",
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        let _script = args.next()?;
        let numkeys = std::str::from_utf8(args.next()?).ok()?;
        if numkeys.parse::<usize>().ok()? == 0 {
            return None;
        }
        return args.next();
    }
    const KEYLESS: [&[u8]; 5] = [b"WAIT", b"SCAN", b"CLUSTER", b"PING", b"INFO"];
    if KEYLESS.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        return None;
    }
    args.next()
}

/// The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of
/// the hash tag (the text between the first `{` and the next `}`, when not
/// empty), or of the whole key, modulo 16384.
pub(crate) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The most nodes the subscriber keeps as candidates.
const MAX_CANDIDATES: usize = 64;

/// Learn the cluster's nodes from the node `conn` is connected to (`CLUSTER
/// NODES`), and add those not yet among `candidates` (as clients with
/// `seed`'s settings), so that the subscriber can move to a node the
/// application did not name when the ones it named fail. Not a cluster, or
/// an address that is not plain TCP: nothing is added.
pub(crate) fn learn_nodes(
    seed: &redis::Client,
    conn: &mut redis::Connection,
    candidates: &mut Vec<redis::Client>,
) {
    let redis::ConnectionAddr::Tcp(_, _) = seed.get_connection_info().addr() else {
        return;
    };
    let Ok(nodes) = redis::cmd("CLUSTER").arg("NODES").query::<String>(conn) else {
        return;
    };
    for line in nodes.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(address), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if flags.contains("fail") || flags.contains("noaddr") || flags.contains("handshake") {
            continue;
        }
        // `ip:port@cport[,hostname]`
        let address = address.split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = address.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if host.is_empty() || candidates.len() >= MAX_CANDIDATES {
            continue;
        }
        let known = candidates.iter().any(|client| {
            matches!(client.get_connection_info().addr(),
                redis::ConnectionAddr::Tcp(h, p) if h == host && *p == port)
        });
        if known {
            continue;
        }
        let info = seed
            .get_connection_info()
            .clone()
            .set_addr(redis::ConnectionAddr::Tcp(host.to_owned(), port));
        if let Ok(client) = redis::Client::open(info) {
            candidates.push(client);
        }
    }
}

/// The primaries' addresses (`host:port`) in a `CLUSTER SLOTS` reply.
pub(crate) fn primaries_of_slots(value: Value) -> RedisResult<Vec<String>> {
    let ranges: Vec<Value> = redis::from_redis_value(value)?;
    let mut primaries = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let Some(Value::Array(primary)) = fields.get(2) else {
            continue;
        };
        let (Some(host), Some(port)) = (primary.first(), primary.get(1)) else {
            continue;
        };
        let host: String = redis::from_redis_value(host.clone())?;
        let port: u16 = redis::from_redis_value(port.clone())?;
        let address = format!("{host}:{port}");
        if !primaries.contains(&address) {
            primaries.push(address);
        }
    }
    Ok(primaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_slots() {
        // Values from `CLUSTER KEYSLOT` on Redis 7 (and the Cluster spec).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
        assert_eq!(hash_slot(b"CM:{cat:1}"), hash_slot(b"CM:{cat:1}:lease"));
    }

    #[test]
    fn pipelines_split_by_slot_and_come_back_in_order() {
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("CM:{a}")
            .arg("CM:{a}:lease");
        pipe.cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("CM:{b}")
            .arg("CM:{b}:lease");
        pipe.cmd("GET").arg("CM:{a}");
        pipe.cmd("WAIT").arg(1).arg(0);
        let groups = by_slot(&pipe);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0], (Some(hash_slot(b"a")), vec![0, 2]));
        assert_eq!(groups[1], (Some(hash_slot(b"b")), vec![1]));
        assert_eq!(groups[2], (None, vec![3]));
        let replies = vec![
            Ok(vec![Value::Int(0), Value::Int(2)]),
            Ok(vec![Value::Int(1)]),
            Ok(vec![Value::Int(3)]),
        ];
        let Value::Array(ordered) = reassemble(4, &groups, replies).expect("no error") else {
            panic!("an array");
        };
        assert_eq!(
            ordered,
            vec![Value::Int(0), Value::Int(1), Value::Int(2), Value::Int(3)]
        );
    }
}
