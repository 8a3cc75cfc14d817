use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:id}", value = String)]
struct CatNode {
    id: u64,
}

fn main() {}
