use cacheme::{Node, cacheme};

#[derive(Node)]
#[node(key, value = 5, ttl(300), "cat", node::tag = "cats", version = "")]
struct CatNode {
    id: u64,
}

#[cacheme(ttl = 300, key = format!("cat:{id}"), ttl = 60, skip)]
fn get_cat(id: u64) -> String {
    id.to_string()
}

fn main() {}
