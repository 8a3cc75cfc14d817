use cacheme::cacheme;

struct CatInfo {
    name: String,
}

#[cacheme(key = format!("cat:{id}"))]
fn get_cat(id: u64) -> CatInfo {
    CatInfo { name: id.to_string() }
}

fn main() {}
