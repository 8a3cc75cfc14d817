use cacheme::Node;

#[derive(Node)]
#[node(key = "animal:{id}", value = String)]
enum AnimalNode {
    Cat { id: u64 },
    Dog { id: u64 },
}

fn main() {}
