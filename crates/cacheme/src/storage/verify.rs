//! `verify`: one round trip that checks what a cache will need from its
//! Redis before it is used: that the server is reachable and accepts the
//! credentials, that Lua scripts run, and that the ACL user may run every
//! command cacheme sends, on its keys (`{prefix}*`) and its channel.
//!
//! The commands a cache sends itself are sent as they are (on probe keys
//! under the prefix); the commands its scripts run are tried by a probe
//! script with `redis.pcall`, which reports the ones the ACL refuses
//! (Redis checks the commands a script runs against the caller's ACL).
//! Probe keys live on the `{inv}` hash slot and are deleted again.

use std::time::Duration;

use redis::{RedisError, Value};

use super::endpoint::Endpoint;
use crate::events::SequenceKeys;
use crate::{Error, Result};

/// The commands cacheme's scripts run, tried by the probe script.
const PROBE: &str = r"
local denied = {}
local function try(...)
  local r = redis.pcall(...)
  -- Redis 7.0 words a refusal inside a script as The user executing the
  -- script cannot ..., later versions as NOPERM ...
  if type(r) == 'table' and r.err and (string.find(r.err, 'NOPERM', 1, true)
      or string.find(r.err, 'user executing the script', 1, true)) then
    denied[#denied + 1] = string.upper((...)) .. ' ' .. r.err
  end
end
try('SET', KEYS[1], '1', 'PX', '60000')
try('GET', KEYS[1])
try('SETRANGE', KEYS[1], 0, '2')
try('APPEND', KEYS[1], '+')
try('PEXPIRE', KEYS[1], '60000')
try('DEL', KEYS[1])
try('INCR', KEYS[1])
try('UNLINK', KEYS[1])
try('XADD', KEYS[2], 'MAXLEN', '~', '1', '*', 'e', '')
try('UNLINK', KEYS[2])
try('TIME')
try('PUBLISH', ARGV[1], 'V')
return denied
";

/// The probe keys and channel of a cache with these sequence keys.
struct Probe {
    value: String,
    log: String,
    channel: String,
    scan: String,
}

impl Probe {
    fn new(sequence: &SequenceKeys) -> Self {
        // `{prefix}{inv}:seq` → `{prefix}{inv}:verify`.
        let base = sequence.seq.trim_end_matches(":seq");
        Probe {
            value: format!("{base}:verify"),
            log: format!("{base}:verify-log"),
            channel: format!("{base}:verify"),
            scan: format!("{}*", crate::key::escape_glob(&format!("{base}:verify"))),
        }
    }
}

/// The requests of the check, in order, named by the command they test.
fn requests(sequence: &SequenceKeys, sentinel: bool) -> (redis::Pipeline, Vec<&'static str>) {
    let probe = Probe::new(sequence);
    let script = redis::Script::new(PROBE);
    let mut pipe = redis::pipe();
    // Each command's own reply, errors included: the first refusal in
    // order is the one reported.
    pipe.ignore_errors();
    let mut names = Vec::new();
    let mut add = |name: &'static str, cmd: redis::Cmd| {
        pipe.add_command(cmd);
        names.push(name);
    };
    let mut eval = redis::cmd("EVAL");
    eval.arg(PROBE)
        .arg(2)
        .arg(&probe.value)
        .arg(&probe.log)
        .arg(&sequence.channel);
    add("EVAL", eval);
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha
        .arg(script.get_hash())
        .arg(2)
        .arg(&probe.value)
        .arg(&probe.log)
        .arg(&sequence.channel);
    add("EVALSHA", evalsha);
    let mut get = redis::cmd("GET");
    get.arg(&probe.value);
    add("GET", get);
    let mut mget = redis::cmd("MGET");
    mget.arg(&probe.value).arg(&probe.value);
    add("MGET", mget);
    let mut set = redis::cmd("SET");
    set.arg(&probe.value)
        .arg("1")
        .arg("NX")
        .arg("PX")
        .arg(60_000)
        .arg("GET");
    add("SET", set);
    let mut xrange = redis::cmd("XRANGE");
    xrange.arg(&probe.log).arg("-").arg("+").arg("COUNT").arg(1);
    add("XRANGE", xrange);
    let mut scan = redis::cmd("SCAN");
    scan.arg(0)
        .arg("MATCH")
        .arg(&probe.scan)
        .arg("COUNT")
        .arg(1);
    add("SCAN", scan);
    let mut wait = redis::cmd("WAIT");
    wait.arg(0).arg(1);
    add("WAIT", wait);
    let mut unlink = redis::cmd("UNLINK");
    unlink.arg(&probe.value).arg(&probe.log);
    add("UNLINK", unlink);
    if sentinel {
        // The sentinel watcher checks the primary's role.
        add("ROLE", redis::cmd("ROLE"));
    }
    add("PING", redis::cmd("PING"));
    // Last: after SUBSCRIBE only (UN)SUBSCRIBE and PING may follow. On a
    // channel of its own, so that no message can come in between.
    let mut subscribe = redis::cmd("SUBSCRIBE");
    subscribe.arg(&probe.channel);
    add("SUBSCRIBE", subscribe);
    let mut unsubscribe = redis::cmd("UNSUBSCRIBE");
    unsubscribe.arg(&probe.channel);
    add("UNSUBSCRIBE", unsubscribe);
    (pipe, names)
}

/// Run the check over a new blocking connection to the endpoint's primary.
pub(crate) fn verify_blocking(
    endpoint: &Endpoint,
    sequence: &SequenceKeys,
    timeout: Duration,
) -> Result<()> {
    let url = endpoint.describe().to_owned();
    let user = endpoint.user().to_owned();
    let connect_error = |source: RedisError| {
        if source.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(source.code(), Some("WRONGPASS" | "NOAUTH"))
        {
            Error::Authentication {
                url: url.clone(),
                user: user.clone(),
                source,
            }
        } else if source.code() == Some("NOPERM") {
            denied(&user, "CONNECT", &source.to_string())
        } else {
            Error::Connect {
                url: url.clone(),
                source,
            }
        }
    };
    let primary = endpoint.primary(timeout).map_err(connect_error)?;
    let mut conn = primary
        .client
        .get_connection_with_timeout(timeout)
        .map_err(connect_error)?;
    conn.set_read_timeout(Some(timeout))
        .map_err(connect_error)?;
    conn.set_write_timeout(Some(timeout))
        .map_err(connect_error)?;
    let (pipe, names) = requests(sequence, endpoint.is_sentinel());
    // Each command's own reply (an error reply does not fail the others).
    let replies: Vec<Value> = pipe
        .query::<Vec<Value>>(&mut conn)
        .map_err(connect_error)
        .map_err(|e| match e {
            Error::Connect { url, source } if source.is_timeout() => Error::Timeout {
                command: "verify",
                key: url,
                timeout,
            },
            other => other,
        })?;
    judge(&user, &names, replies)
}

/// Read the replies: the first refusal is the error.
fn judge(user: &str, names: &[&'static str], replies: Vec<Value>) -> Result<()> {
    for (name, reply) in names.iter().zip(replies) {
        match reply {
            Value::ServerError(error) => {
                let message = error.to_string();
                if error.code() == "NOPERM"
                    || message.contains("NOPERM")
                    || message.contains("user executing the script")
                {
                    return Err(denied(user, name, &message));
                }
                let source: RedisError = error.into();
                return Err(Error::Redis {
                    command: name,
                    key: "verify".to_owned(),
                    source,
                });
            }
            Value::Array(denials) if *name == "EVAL" || *name == "EVALSHA" => {
                if let Some(first) = denials.into_iter().next() {
                    let text: String = redis::from_redis_value(first).unwrap_or_default();
                    let (command, message) = text.split_once(' ').unwrap_or((&text, ""));
                    return Err(denied(user, command, message));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn denied(user: &str, command: &str, message: &str) -> Error {
    Error::PermissionDenied {
        user: user.to_owned(),
        command: command.to_owned(),
        reason: message.trim().to_owned(),
    }
}
