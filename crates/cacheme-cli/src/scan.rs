//! `cacheme tags` and `cacheme nodes`: tags and groups have no keys of
//! their own (each value lists its tag and groups), so they are counted by
//! scanning the values' headers.

use std::collections::BTreeMap;
use std::process::ExitCode;

use cacheme::ops;
use serde_json::json;

use crate::error::{CliError, redis};
use crate::output::{progress, table};
use crate::{Global, connect};

/// Keys asked for per `SCAN` page.
const PAGE: usize = 1_000;
/// Bytes read from each value: its header and dependency list, usually.
const HEAD: isize = 4_095;

/// Which index to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Index {
    Tags,
    Groups,
}

/// One tag's or group's values.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) values: u64,
    pub(crate) stale: u64,
    pub(crate) bytes: u64,
}

/// What a scan of every value found.
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub(crate) tags: BTreeMap<String, Sizes>,
    pub(crate) groups: BTreeMap<String, Sizes>,
    pub(crate) scanned: u64,
    pub(crate) values: u64,
}

/// Scan every value under the prefix (header and dependency list only).
pub(crate) fn census(global: &Global, con: &mut redis::Connection) -> Result<Census, CliError> {
    let glob = ops::scan_all_glob(&global.prefix);
    let bar = progress(global, None, "scanning values");
    let mut census = Census::default();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&glob)
            .arg("COUNT")
            .arg(PAGE)
            .query(con)
            .map_err(redis("SCAN"))?;
        census.scanned += keys.len() as u64;
        bar.inc(keys.len() as u64);
        let values: Vec<&String> = keys
            .iter()
            .filter(|key| ops::cache_key_of(&global.prefix, key).is_some())
            .collect();
        if !values.is_empty() {
            let mut pipe = redis::pipe();
            for key in &values {
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(HEAD);
                pipe.cmd("STRLEN").arg(key);
            }
            let replies: Vec<redis::Value> = pipe.query(con).map_err(redis("GETRANGE"))?;
            for (key, reply) in values.iter().zip(replies.chunks(2)) {
                let (Some(redis::Value::BulkString(head)), Some(redis::Value::Int(len))) =
                    (reply.first(), reply.get(1))
                else {
                    continue;
                };
                let dependencies = match ops::dependencies_of(head) {
                    Some(found) => Some(found),
                    // A dependency list longer than the head: read it all.
                    None if head.len() as i64 > HEAD as i64 => {
                        let whole: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(key.as_str())
                            .query(con)
                            .map_err(redis("GET"))?;
                        whole.as_deref().and_then(ops::dependencies_of)
                    }
                    None => None,
                };
                let Some((tag, groups, state)) = dependencies else {
                    continue;
                };
                census.values += 1;
                let add = |sizes: &mut Sizes| {
                    sizes.values += 1;
                    sizes.bytes += u64::try_from(*len).unwrap_or_default();
                    if state == "stale" {
                        sizes.stale += 1;
                    }
                };
                if let Some(tag) = tag {
                    add(census.tags.entry(tag).or_default());
                }
                for group in groups {
                    add(census.groups.entry(group).or_default());
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    bar.finish_and_clear();
    Ok(census)
}

pub(crate) fn run(global: &Global, index: Index) -> Result<ExitCode, CliError> {
    let mut con = connect(global)?;
    let census = census(global, &mut con)?;
    let (name, entries) = match index {
        Index::Tags => ("tag", &census.tags),
        Index::Groups => ("group", &census.groups),
    };
    if global.json {
        let rows: Vec<_> = entries
            .iter()
            .map(|(entry, sizes)| {
                json!({ name: entry, "values": sizes.values, "stale": sizes.stale, "bytes": sizes.bytes })
            })
            .collect();
        println!("{:#}", json!(rows));
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|(entry, sizes)| {
                vec![
                    entry.clone(),
                    sizes.values.to_string(),
                    sizes.stale.to_string(),
                    sizes.bytes.to_string(),
                ]
            })
            .collect();
        let header = [
            name.to_uppercase(),
            "VALUES".into(),
            "STALE".into(),
            "BYTES".into(),
        ];
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        print!("{}", table(&header, &rows));
        println!(
            "{} {name}s, {} values ({} keys scanned under `{}`)",
            entries.len(),
            census.values,
            census.scanned,
            global.prefix
        );
    }
    Ok(ExitCode::SUCCESS)
}
