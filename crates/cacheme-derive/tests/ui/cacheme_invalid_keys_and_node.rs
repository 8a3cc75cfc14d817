use cacheme::{Node, cacheme};

#[derive(Node)]
#[node(key = "cat:{id}", value = String)]
struct CatNode {
    id: u64,
}

#[cacheme(node = CatNode { id }, invalid_keys = format!("owner:{owner}"))]
fn get_cat(id: u64, owner: u64) -> String {
    format!("{id} of {owner}")
}

fn main() {}
