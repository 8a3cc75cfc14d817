use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:{}", value = String)]
struct CatNode {
    id: u64,
}

fn main() {}
