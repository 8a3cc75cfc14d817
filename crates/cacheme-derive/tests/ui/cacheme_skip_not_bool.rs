use cacheme::cacheme;

#[cacheme(key = format!("cat:{id}"), skip = id)]
fn get_cat(id: u64) -> String {
    id.to_string()
}

fn main() {}
