use cacheme::Node;

#[derive(Node)]
#[node(
    key = "cat:{id}",
    value = String,
    stale = "yes",
    version = 2,
    tag = "{cats}",
    hit = |node, key, value| println!("{key}"),
)]
struct CatNode {
    id: u64,
}

#[derive(Node)]
#[node(key = "dog:{id}", value = String, key = "hound:{id}")]
struct DogNode {
    id: u64,
}

fn main() {}
