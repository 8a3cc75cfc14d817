//! The public API of `cacheme`, listed: a change to it is a deliberate
//! change to this list. Plumbing for the macros lives in
//! `cacheme::__private` (hidden, not public API) and is not listed.

/// Every intended export, by path. Compiling this proves each exists.
#[allow(unused_imports, dead_code)]
mod exists {
    use cacheme::key::{escape, escape_glob, push_escaped};
    use cacheme::ops::{
        FleetKeys, Inspected, InspectedValue, LOG_ENTRY_FIELD, LoggedInvalidation, MAX_PROCESSES,
        NodeReport, ProcessReport, cache_key_of, dependencies_of, glob_match, inspect,
        invalidation_keys, lease_key, max_age, parse_logged_invalidation, read_reports, redact_url,
        scan_all_glob, scan_glob, value_key,
    };
    use cacheme::sources::{
        InvalidationSource, NextEvent, ParseEventError, RedisChannelSource, SourceEvent, boxed,
        connect,
    };
    use cacheme::{
        Cache, CacheBuilder, CacheValue, Codec, CodecError, CodecOperation, Error, GroupsOf,
        HitHook, IntoInvalidKeys, InvalidKeys, InvalidManager, InvalidNode, Invalidation,
        InvalidationProgress, Latency, LoadError, LocalSpec, LocalValue, Lookup, Manager, MissHook,
        Node, NodeStats, Pattern, Result, Settings, Spec, StatsSnapshot, Tag, Unreadable, cacheme,
        create_invalidation, global, install, tag, tags,
    };
}

const EXPECTED_ROOT: &[&str] = &[
    "Cache",
    "CacheBuilder",
    "CacheValue",
    "Codec",
    "CodecError",
    "CodecOperation",
    "Error",
    "GroupsOf",
    "HitHook",
    "IntoInvalidKeys",
    "InvalidKeys",
    "InvalidManager",
    "InvalidNode",
    "Invalidation",
    "InvalidationProgress",
    "Latency",
    "LoadError",
    "LocalSpec",
    "LocalValue",
    "Lookup",
    "Manager",
    "MissHook",
    "Node",
    "NodeStats",
    "Pattern",
    "Result",
    "Settings",
    "Spec",
    "StatsSnapshot",
    "Tag",
    "Unreadable",
    "cacheme",
    "create_invalidation",
    "global",
    "install",
    "key",
    "ops",
    "sources",
    "tag",
    "tags",
];

const EXPECTED_KEY: &[&str] = &["escape", "escape_glob", "push_escaped"];

/// `ops.rs`'s own items (its re-exports of fleet stats types are in `exists`).
const EXPECTED_OPS: &[&str] = &[
    "Inspected",
    "InspectedValue",
    "LoggedInvalidation",
    "cache_key_of",
    "dependencies_of",
    "glob_match",
    "inspect",
    "invalidation_keys",
    "lease_key",
    "parse_logged_invalidation",
    "redact_url",
    "scan_all_glob",
    "scan_glob",
    "value_key",
];

const EXPECTED_SOURCES: &[&str] = &[
    "InvalidationSource",
    "NextEvent",
    "ParseEventError",
    "RedisChannelSource",
    "SourceEvent",
    "boxed",
    "connect",
];

fn source(file: &str) -> String {
    let path = format!("{}/crates/cacheme/src/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The names `lib.rs` exports with `pub use` and `pub mod`, outside
/// `__private` and doc tests.
fn root_exports() -> Vec<String> {
    let lib = source("lib.rs");
    let public = &lib[..lib.find("pub mod __private").expect("a __private module")];
    let mut names = Vec::new();
    let mut rest = public;
    while let Some(at) = rest.find("\npub ") {
        rest = &rest[at + 5..];
        let statement = &rest[..rest.find(';').expect("a statement ends")];
        if let Some(module) = statement.strip_prefix("mod ") {
            names.push(module.trim().to_owned());
        } else if let Some(path) = statement.strip_prefix("use ") {
            let list = match (path.find('{'), path.rfind('}')) {
                (Some(open), Some(close)) => &path[open + 1..close],
                _ => path.rsplit("::").next().expect("a name"),
            };
            names.extend(
                list.split(',')
                    .map(|name| {
                        name.trim()
                            .rsplit(" as ")
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .to_owned()
                    })
                    .filter(|name| !name.is_empty()),
            );
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The public items of a module file that are not `#[doc(hidden)]`.
fn module_items(file: &str) -> Vec<String> {
    let text = source(file);
    let mut names = Vec::new();
    let mut hidden = false;
    for line in text.lines() {
        if line.starts_with("#[doc(hidden)]") {
            hidden = true;
            continue;
        }
        if line.starts_with("#[") || line.starts_with("///") {
            continue;
        }
        for kind in [
            "pub fn ",
            "pub struct ",
            "pub enum ",
            "pub trait ",
            "pub type ",
        ] {
            if let Some(rest) = line.strip_prefix(kind) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !hidden {
                    names.push(name);
                }
            }
        }
        hidden = false;
    }
    names.sort();
    names
}

#[test]
fn the_public_api_is_what_this_list_says() {
    assert_eq!(root_exports(), EXPECTED_ROOT);
    assert_eq!(module_items("key.rs"), EXPECTED_KEY);
    assert_eq!(module_items("sources.rs"), EXPECTED_SOURCES);
    assert_eq!(module_items("ops.rs"), EXPECTED_OPS);
    let total =
        EXPECTED_ROOT.len() - 3 + EXPECTED_KEY.len() + EXPECTED_SOURCES.len() + EXPECTED_OPS.len();
    assert_eq!(total, 61, "items, not counting the three modules");
}
