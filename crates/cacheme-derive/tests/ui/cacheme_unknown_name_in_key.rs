use cacheme::cacheme;

struct Cat {
    name: String,
}

#[cacheme(key = format!("cat:{}", catt.name))]
fn get_cat(cat: &Cat) -> String {
    cat.name.clone()
}

fn main() {}
