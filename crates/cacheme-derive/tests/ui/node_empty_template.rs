use cacheme::Node;

#[derive(Node)]
#[node(key = "", value = String)]
struct CatNode {
    id: u64,
}

fn main() {}
