use cacheme::cacheme;

#[cacheme(ky = format!("cat:{id}"), ttll = 300)]
fn get_cat(id: u64) -> String {
    id.to_string()
}

#[cacheme(key = format!("dog:{id}"), expires_in = 300)]
fn get_dog(id: u64) -> String {
    id.to_string()
}

fn main() {}
