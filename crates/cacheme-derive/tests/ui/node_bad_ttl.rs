use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:{id}", value = String, ttl = "abc")]
struct CatNode {
    id: u64,
}

#[derive(Node)]
#[node(key = "dog:{id}", value = String, ttl = 1.5)]
struct DogNode {
    id: u64,
}

#[derive(Node)]
#[node(key = "cow:{id}", value = String, ttl = 0)]
struct CowNode {
    id: u64,
}

#[derive(Node)]
#[node(key = "pig:{id}", value = String, ttl = 60, refresh_after = "5m")]
struct PigNode {
    id: u64,
}

fn main() {}
