use cacheme::Node;

#[derive(Node)]
#[node(value = String, ttl = 300)]
struct CatNode {
    id: u64,
}

fn main() {}
