use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:{id}", value = String, ttll = 300)]
struct CatNode {
    id: u64,
}

#[derive(Node)]
#[node(key = "dog:{id}", value = String, expires_in = 300)]
struct DogNode {
    id: u64,
}

fn main() {}
