use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:{id}")]
struct CatNode {
    id: u64,
}

fn main() {}
