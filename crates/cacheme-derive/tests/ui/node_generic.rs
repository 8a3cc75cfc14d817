use cacheme::Node;

#[derive(Node)]
#[node(key = "item:{id}", value = String)]
struct ItemNode<T> {
    id: T,
}

fn main() {}
