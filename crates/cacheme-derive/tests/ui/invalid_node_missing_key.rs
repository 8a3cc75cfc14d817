use cacheme::InvalidNode;

#[derive(InvalidNode)]
#[invalid_node()]
struct UserInvalid {
    id: u64,
}

#[derive(InvalidNode)]
struct ShopInvalid {
    id: u64,
}

fn main() {}
