use cacheme::InvalidNode;

#[derive(InvalidNode)]
#[invalid_node(key = "user:{0}")]
struct UserInvalid(u64);

fn main() {}
