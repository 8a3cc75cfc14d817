use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:{idd}", value = String)]
struct CatNode {
    id: u64,
    name: String,
}

fn main() {}
