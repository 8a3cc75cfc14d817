//! # cacheme
//!
//! Memoize functions and manage cache nodes on Redis (or in memory), the
//! Rust form of the Python package cacheme, with what it lacked: exactly one
//! load per cold key across every process, invalidation that never loses to
//! a load in flight, a hit that costs one round trip, and a cache that fails
//! open when Redis is down.
//!
//! ```
//! use cacheme::Node;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Cat { id: u64, name: String }
//!
//! #[derive(Node)]
//! #[node(key = "cat:{id}", value = Cat, ttl = 300)]
//! struct CatNode { id: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // No set-up: the global cache is in memory until one is installed with
//! // `cacheme::Cache::builder().redis_url("redis://127.0.0.1/").install()`.
//! let cat = CatNode::objects()
//!     .get_or_load(1, || async { Ok::<_, std::io::Error>(Cat { id: 1, name: "Tom".into() }) })
//!     .await
//!     .expect("the loader succeeds");
//! assert_eq!(CatNode::objects().get(1).await, Some(cat));
//! CatNode::objects().invalid(1).await.expect("memory store");
//! # }
//! ```
//!
//! See the README for the feature table, and `docs/` for the protocol, the
//! data model and the benchmarks.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod cache;
mod codec;
mod driver;
mod envelope;
mod error;
mod events;
mod flight;
mod invalidation;
pub mod key;
mod local;
mod lookup;
mod manager;
mod many;
mod memo;
mod node;
mod nonfinite;
pub mod ops;
mod protocol;
mod settings;
pub mod sources;
mod spec;
mod stamps;
mod stats;
mod storage;
mod subscriber;
mod tags;
mod wakeups;
mod writes;

pub use cache::{Cache, global, install};
pub use codec::{Codec, CodecError, CodecOperation};
pub use envelope::Unreadable;
pub use error::{Error, LoadError, Result};
pub use invalidation::{Invalidation, InvalidationProgress, Pattern, create_invalidation};
pub use lookup::{CacheValue, GroupsOf, HitHook, LocalValue, Lookup, MissHook};
pub use manager::{InvalidManager, Manager};
pub use node::{IntoInvalidKeys, InvalidKeys, InvalidNode, Node};
pub use settings::{CacheBuilder, Settings};
pub use spec::{LocalSpec, Spec};
pub use stats::{Latency, NodeStats, StatsSnapshot};
pub use tags::{Tag, tag, tags};

pub use cacheme_derive::{InvalidNode, Node, cacheme};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// The examples of docs/batch.md, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/batch.md")]
struct BatchDoctests;

/// Not public API: used by the code the macros generate.
#[doc(hidden)]
pub mod __private {
    pub use crate::lookup::local_clone;
    pub use crate::node::{CloneFn, TtlFn};
    pub use crate::spec::Registration;
    pub use inventory;

    pub use crate::__cacheme_error_policy as error_policy;
    pub use crate::sources::{SourceRegistration, registered_sources};

    /// Envelope format details, for tools and tests that read raw values.
    pub mod wire {
        pub use crate::envelope::{
            Dependency, Envelope, FRESH, HEADER_LEN, Header, LOADING, MAGIC, STALE, STATE_OFFSET,
            State, Stored, VERSION, placeholder, seal,
        };
    }
    pub use crate::many::{
        load_many, load_many_blocking, map_of, own_error as batch_error, vec_of, vec_pairs,
    };
    pub use crate::memo::{
        DefaultKey, ErrorPolicy, ErrorSharing, KeepErrorsOwn, KeyArg, MemoNode, NodeOf,
        ResultParts, ShareClonedErrors, infallible, infallible_blocking, into_value,
        load_blocking_unless_skipped, load_unless_skipped,
    };
}
