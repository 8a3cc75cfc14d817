use cacheme::Node;

struct CatId(u64);

#[derive(Node)]
#[node(key = "cat:{id}", value = String)]
struct CatNode {
    id: CatId,
}

fn main() {}
