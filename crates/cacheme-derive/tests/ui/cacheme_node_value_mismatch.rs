use cacheme::{Node, cacheme};

#[derive(Node)]
#[node(key = "cat:{id}", value = String)]
struct CatNode {
    id: u64,
}

#[cacheme(node = CatNode { id })]
fn cat_age(id: u64) -> u32 {
    id as u32
}

fn main() {}
