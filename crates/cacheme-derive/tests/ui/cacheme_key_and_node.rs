use cacheme::{Node, cacheme};

#[derive(Node)]
#[node(key = "cat:{id}", value = String)]
struct CatNode {
    id: u64,
}

#[cacheme(key = format!("cat:{id}"), node = CatNode { id })]
fn get_cat(id: u64) -> String {
    id.to_string()
}

fn main() {}
