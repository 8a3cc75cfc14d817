use cacheme::cacheme;

struct Cat {
    name: String,
}

#[cacheme]
fn get_cat(id: u64, cat: &Cat) -> String {
    format!("{id}: {}", cat.name)
}

fn main() {}
