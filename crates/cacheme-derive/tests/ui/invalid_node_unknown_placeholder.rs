use cacheme::InvalidNode;

#[derive(InvalidNode)]
#[invalid_node(key = "user:{user_id}")]
struct UserInvalid {
    id: u64,
}

fn main() {}
