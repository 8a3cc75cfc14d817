use std::collections::HashMap;

use cacheme::cacheme;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Cat {
    id: u64,
}

/// `batch` names no parameter.
#[cacheme(batch = cat_ids, each = id, key = format!("cat:{id}"), by = |c: &Cat| c.id)]
async fn no_such_parameter(ids: Vec<u64>) -> Vec<Cat> {
    ids.into_iter().map(|id| Cat { id }).collect()
}

/// The batch parameter is not a `Vec`.
#[cacheme(batch = ids, each = id, key = format!("cat:{id}"), by = |c: &Cat| c.id)]
async fn not_a_vec(ids: &[u64]) -> Vec<Cat> {
    ids.iter().map(|id| Cat { id: *id }).collect()
}

/// No `each`.
#[cacheme(batch = ids, key = format!("cat:{id}"), by = |c: &Cat| c.id)]
async fn no_each(ids: Vec<u64>) -> Vec<Cat> {
    ids.into_iter().map(|id| Cat { id }).collect()
}

/// A `Vec` without `by`.
#[cacheme(batch = ids, each = id, key = format!("cat:{id}"))]
async fn vec_without_by(ids: Vec<u64>) -> Vec<Cat> {
    ids.into_iter().map(|id| Cat { id }).collect()
}

/// A map with `by`.
#[cacheme(batch = ids, each = id, key = format!("cat:{id}"), by = |c: &Cat| c.id)]
async fn map_with_by(ids: Vec<u64>) -> HashMap<u64, Cat> {
    ids.into_iter().map(|id| (id, Cat { id })).collect()
}

/// Neither a `Vec` nor a map.
#[cacheme(batch = ids, each = id, key = format!("cat:{id}"))]
async fn not_a_collection(ids: Vec<u64>) -> Option<Cat> {
    ids.first().map(|id| Cat { id: *id })
}

/// No key.
#[cacheme(batch = ids, each = id, by = |c: &Cat| c.id)]
async fn no_key(ids: Vec<u64>) -> Vec<Cat> {
    ids.into_iter().map(|id| Cat { id }).collect()
}

/// What batch fns do not take.
#[cacheme(batch = ids, each = id, key = format!("cat:{id}"), by = |c: &Cat| c.id, skip = ids.is_empty())]
async fn with_skip(ids: Vec<u64>) -> Vec<Cat> {
    ids.into_iter().map(|id| Cat { id }).collect()
}

/// `each` without `batch`.
#[cacheme(each = id, key = format!("cat:{id}"))]
async fn each_without_batch(id: u64) -> Cat {
    Cat { id }
}

fn main() {}
