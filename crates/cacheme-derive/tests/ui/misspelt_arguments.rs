use cacheme::{InvalidNode, Node, cacheme};

#[derive(Node)]
#[node(key = "cat:{id}", value = String, tll = 300, local_tll = 5)]
struct CatNode {
    id: u64,
}

#[derive(InvalidNode)]
#[invalid_node(kye = "user:{id}")]
struct UserInvalid {
    id: u64,
}

#[cacheme(key = format!("cat:{id}"), invalid_key = format!("user:{id}"), krate = cacheme)]
fn get_cat(id: u64) -> String {
    id.to_string()
}

fn main() {}
