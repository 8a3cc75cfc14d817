//! Tags: every node type and cached function indexes its keys under a tag
//! (the node's name, the function's name, or `tag = ".."`), and registers the
//! tag in an `inventory` registry so that it can be listed and invalidated
//! by name (Python cacheme's `cacheme.tags['cats']`).

use std::collections::BTreeMap;

use crate::cache::{Cache, global};
use crate::spec::{self, Spec};
use crate::{Error, Result};

/// A tag: a name, and the node types and functions registered under it.
#[derive(Debug, Clone)]
pub struct Tag {
    name: String,
    specs: Vec<&'static Spec>,
    cache: Option<Cache>,
}

/// Every registered tag, sorted by name.
///
/// ```
/// let names: Vec<String> = cacheme::tags().iter().map(|t| t.name().to_owned()).collect();
/// assert!(names.contains(&"lookup".to_owned()));
/// ```
pub fn tags() -> Vec<Tag> {
    let mut by_name: BTreeMap<&'static str, Vec<&'static Spec>> = BTreeMap::new();
    for spec in spec::registered() {
        by_name.entry(spec.tag()).or_default().push(spec);
    }
    by_name
        .into_iter()
        .map(|(name, specs)| Tag {
            name: name.to_owned(),
            specs,
            cache: None,
        })
        .collect()
}

/// The tag `name`, on the global cache. Its [`invalid`](Tag::invalid) fails
/// with [`Error::UnknownTag`] if no node or function registered it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// cacheme::tag("lookup").invalid().await.expect("a registered tag");
/// assert!(cacheme::tag("no-such-tag").invalid().await.is_err());
/// # }
/// ```
pub fn tag(name: &str) -> Tag {
    Tag {
        name: name.to_owned(),
        specs: spec::registered().filter(|s| s.tag() == name).collect(),
        cache: None,
    }
}

impl Cache {
    /// The tag `name` on this cache.
    pub fn tag(&self, name: &str) -> Tag {
        tag(name).in_cache(self)
    }
}

impl Tag {
    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node types and functions registered under it.
    pub fn specs(&self) -> &[&'static Spec] {
        &self.specs
    }

    /// The same tag on another cache.
    pub fn in_cache(mut self, cache: &Cache) -> Self {
        self.cache = Some(cache.clone());
        self
    }

    fn check(&self) -> Result<Cache> {
        if self.specs.is_empty() {
            let known: Vec<String> = tags().into_iter().map(|t| t.name).collect();
            return Err(Error::UnknownTag {
                name: self.name.clone(),
                known: known.join(", "),
            });
        }
        Ok(self.cache.clone().unwrap_or_else(global))
    }

    /// Delete every value written under this tag (Python cacheme's
    /// `tags['cats'].objects.invalid()`: deleted, no stale data), loads in
    /// flight included, in O(1) whatever their number.
    #[doc(alias = "invalidate")]
    pub async fn invalid(&self) -> Result<()> {
        self.check()?
            .create_invalidation()
            .tag(&self.name)
            .run()
            .await
            .map(drop)
    }

    /// [`invalid`](Self::invalid) for blocking code.
    #[doc(alias = "invalidate")]
    pub fn invalid_blocking(&self) -> Result<()> {
        self.check()?
            .create_invalidation()
            .tag(&self.name)
            .run_blocking()
            .map(drop)
    }
}
