use cacheme::Node;

struct Cat {
    name: String,
}

#[derive(Node)]
#[node(key = "cat:{id}", value = Cat)]
struct CatNode {
    id: u64,
}

fn main() {}
