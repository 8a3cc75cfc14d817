use cacheme::Node;

#[derive(Node)]
#[node(key = format!("cat:{}", 1), value = String)]
struct CatNode {
    id: u64,
}

fn main() {}
