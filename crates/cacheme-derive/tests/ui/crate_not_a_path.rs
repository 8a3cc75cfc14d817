use cacheme::{InvalidNode, Node, cacheme};

#[derive(Node)]
#[node(crate = 1, key = "cat:{id}", value = String)]
struct CatNode {
    id: u64,
}

#[derive(InvalidNode)]
#[invalid_node(crate = "not a path", key = "user:{id}")]
struct UserInvalid {
    id: u64,
}

#[cacheme(crate = my_cacheme(), key = format!("cat:{id}"))]
fn get_cat(id: u64) -> String {
    id.to_string()
}

#[cacheme(crate = Vec::<u8>, key = format!("dog:{id}"))]
fn get_dog(id: u64) -> String {
    id.to_string()
}

fn main() {}
