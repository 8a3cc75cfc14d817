use cacheme::Node;

#[derive(Node)]
struct CatNode {
    id: u64,
}

fn main() {}
