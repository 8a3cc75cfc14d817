//! `cacheme inspect KEY`.

use std::process::ExitCode;
use std::time::Duration;

use cacheme::ops::{self, Inspected, InspectedValue};
use serde_json::{Value, json};

use crate::error::{CliError, redis};
use crate::output::{human, now_ms, utc};
use crate::{Global, connect};

/// Log entries read, at most, to tell whether a tag or group invalidation
/// came after the value was claimed.
const LOG_SCAN: usize = 10_000;

pub(crate) fn run(global: &Global, key: &str) -> Result<ExitCode, CliError> {
    let mut con = connect(global)?;
    let value_key = ops::value_key(&global.prefix, key);
    let lease_key = ops::lease_key(&global.prefix, key);
    let (bytes, pttl, lease, lease_pttl): (Option<Vec<u8>>, i64, Option<Vec<u8>>, i64) =
        redis::pipe()
            .cmd("GET")
            .arg(&value_key)
            .cmd("PTTL")
            .arg(&value_key)
            .cmd("GET")
            .arg(&lease_key)
            .cmd("PTTL")
            .arg(&lease_key)
            .query(&mut con)
            .map_err(redis("GET"))?;
    let lease = lease.map(|token| {
        let waiters = token.iter().rev().take_while(|&&b| b == b'+').count();
        json!({
            "token": String::from_utf8_lossy(&token[..token.len() - waiters]),
            "waiters": waiters,
            "ttl_ms": (lease_pttl >= 0).then_some(lease_pttl),
        })
    });
    let ttl_ms = (pttl >= 0).then_some(pttl);
    let mut report = json!({
        "key": key,
        "redis_key": value_key,
        "exists": bytes.is_some(),
        "ttl_ms": ttl_ms,
        "lease": lease,
    });
    let found = bytes.is_some();
    if let Some(bytes) = &bytes {
        match ops::inspect(bytes) {
            Ok(Inspected::Value(value)) => {
                let invalidated = invalidated_since(&mut con, global, &value)?;
                describe_value(&mut report, &value, invalidated);
            }
            Ok(Inspected::Loading { token, waiters }) => {
                report["kind"] = json!("loading");
                report["state"] = json!("loading");
                report["loader"] = json!({ "token": token, "waiters": waiters });
                report["size"] = json!(bytes.len());
            }
            Ok(_) => {
                report["kind"] = json!("unknown");
                report["state"] = json!("unknown");
            }
            Err(reason) => {
                report["kind"] = json!("unreadable");
                report["state"] = json!("unreadable");
                report["reason"] = json!(reason.to_string());
                report["size"] = json!(bytes.len());
            }
        }
    }
    if global.json {
        println!("{report:#}");
    } else {
        print!("{}", human_report(&report));
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The latest invalidation of the value's tag or groups logged after its
/// claim, if any: `(seq, "tag" | "group", name)`.
fn invalidated_since(
    con: &mut redis::Connection,
    global: &Global,
    value: &InspectedValue,
) -> Result<Option<(u64, &'static str, String)>, CliError> {
    let (_, log) = ops::invalidation_keys(&global.prefix);
    let start = format!("{}-0", value.claim_seq.saturating_add(1));
    let entries: Vec<(String, std::collections::HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(&log)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(LOG_SCAN)
        .query(con)
        .map_err(redis("XRANGE"))?;
    let mut found = None;
    for (id, fields) in entries {
        let Some(seq) = id
            .split_once('-')
            .and_then(|(seq, _)| seq.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(payload) = fields.get(ops::LOG_ENTRY_FIELD) else {
            continue;
        };
        let Some(logged) = ops::parse_logged_invalidation(payload) else {
            continue;
        };
        if let Some(tag) = value.tag.as_ref().filter(|tag| logged.tags.contains(tag)) {
            found = Some((seq, "tag", tag.clone()));
        } else if let Some(group) = value.groups.iter().find(|g| logged.groups.contains(g)) {
            found = Some((seq, "group", group.clone()));
        }
    }
    Ok(found)
}

fn describe_value(
    report: &mut Value,
    value: &InspectedValue,
    invalidated: Option<(u64, &'static str, String)>,
) {
    let now = now_ms();
    let expired = value.fresh_until_ms != 0 && value.fresh_until_ms <= now;
    // What a reader makes of it: the state byte, then the invalidation
    // sequence (a tag's invalidation deletes, a group's makes stale), then
    // the fail-safe's expiry.
    let state = match &invalidated {
        Some((_, "tag", _)) => "invalidated",
        Some(_) => "stale",
        None if value.state == "stale" => "stale",
        None if expired => "expired",
        None => "fresh",
    };
    report["kind"] = json!("value");
    report["state"] = json!(state);
    report["state_byte"] = json!(value.state);
    report["invalidated_by"] = match invalidated {
        Some((seq, kind, name)) => json!({ "seq": seq, kind: name }),
        None => Value::Null,
    };
    report["written_at_ms"] = json!(value.written_at_ms);
    report["age_ms"] = json!(now.saturating_sub(value.written_at_ms));
    report["fresh_until_ms"] = json!((value.fresh_until_ms != 0).then_some(value.fresh_until_ms));
    report["claim_seq"] = json!(value.claim_seq);
    report["codec"] = json!(value.codec);
    report["size"] = json!(value.size);
    report["payload_size"] = json!(value.payload_size);
    report["tag"] = json!(value.tag);
    report["groups"] = json!(value.groups);
    report["payload"] = value.payload.clone().unwrap_or(Value::Null);
}

fn human_report(report: &Value) -> String {
    let mut out = String::new();
    let mut line = |name: &str, text: String| out.push_str(&format!("{name:<12}{text}\n"));
    let key = report["key"].as_str().unwrap_or_default();
    let redis_key = report["redis_key"].as_str().unwrap_or_default();
    line("key", format!("{key}  (redis key {redis_key})"));
    if report["exists"] != json!(true) {
        line("state", "missing: nothing stored under this key".to_owned());
        return out;
    }
    let state = report["state"].as_str().unwrap_or_default();
    let detail = match &report["invalidated_by"] {
        Value::Object(by) => {
            let seq = by.get("seq").and_then(Value::as_u64).unwrap_or_default();
            match (
                by.get("tag").and_then(Value::as_str),
                by.get("group").and_then(Value::as_str),
            ) {
                (Some(tag), _) => {
                    format!(" (tag `{tag}` invalidated at #{seq}: never served again)")
                }
                (_, Some(group)) => format!(" (group `{group}` invalidated at #{seq})"),
                _ => String::new(),
            }
        }
        _ => String::new(),
    };
    line("state", format!("{state}{detail}"));
    if let Some(reason) = report["reason"].as_str() {
        line("reason", reason.to_owned());
    }
    if let Some(written) = report["written_at_ms"].as_u64() {
        let age = Duration::from_millis(report["age_ms"].as_u64().unwrap_or_default());
        line(
            "written at",
            format!("{} ({} ago)", utc(written), human(age)),
        );
    }
    let ttl = match report["ttl_ms"].as_u64() {
        Some(ms) => human(Duration::from_millis(ms)),
        None => "none (no expiry)".to_owned(),
    };
    line("ttl", ttl);
    if let Some(until) = report["fresh_until_ms"].as_u64() {
        line(
            "fresh until",
            format!("{} (kept after it for the fail-safe)", utc(until)),
        );
    }
    if let Some(codec) = report["codec"].as_str() {
        line("codec", codec.to_owned());
    }
    if let Some(size) = report["size"].as_u64() {
        let payload = report["payload_size"]
            .as_u64()
            .map(|p| format!(" (payload {p})"))
            .unwrap_or_default();
        line("size", format!("{size} bytes{payload}"));
    }
    if let Some(seq) = report["claim_seq"].as_u64() {
        line("claim", format!("#{seq}"));
    }
    if let Some(tag) = report["tag"].as_str() {
        line("tag", tag.to_owned());
    }
    if let Some(groups) = report["groups"].as_array().filter(|g| !g.is_empty()) {
        let names: Vec<&str> = groups.iter().filter_map(Value::as_str).collect();
        line("groups", names.join(", "));
    }
    if let Some(loader) = report.get("loader") {
        line(
            "loading",
            format!(
                "a caller holds the lease and loads it (waiters: {})",
                if loader["waiters"] == json!(true) {
                    "yes"
                } else {
                    "none"
                }
            ),
        );
    }
    let lease = match &report["lease"] {
        Value::Object(lease) => format!(
            "held, refreshing ({} waiting, expires in {})",
            lease
                .get("waiters")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            human(Duration::from_millis(
                lease
                    .get("ttl_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or_default()
            ))
        ),
        _ => "none".to_owned(),
    };
    line("lease", lease);
    if report["kind"] == json!("value") {
        let payload = match &report["payload"] {
            Value::Null => "(does not decode without its type)".to_owned(),
            payload => payload.to_string(),
        };
        line("payload", payload);
    }
    out
}
