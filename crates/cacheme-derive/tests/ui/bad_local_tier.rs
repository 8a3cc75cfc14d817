use cacheme::{Node, cacheme};

#[derive(Node)]
#[node(key = "cat:{id}", value = String, local_ttl = "soon", local_capacity = 0)]
struct CatNode {
    id: u64,
}

#[derive(Node)]
#[node(key = "dog:{id}", value = String, local_ttl = 0, local_capacity = "many")]
struct DogNode {
    id: u64,
}

#[cacheme(key = format!("cat:{id}"), local_ttl = 1.5, local_capacity = -1)]
fn get_cat(id: u64) -> String {
    id.to_string()
}

fn main() {}
