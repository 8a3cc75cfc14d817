use cacheme::InvalidNode;

#[derive(InvalidNode)]
#[invalid_node(key = "user:{id}", ttl = 300)]
struct UserInvalid {
    id: u64,
}

fn main() {}
