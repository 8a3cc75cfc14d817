use cacheme::Node;

#[derive(Node)]
#[node(key = "cat:{0}", value = String)]
struct CatNode(u64);

fn main() {}
