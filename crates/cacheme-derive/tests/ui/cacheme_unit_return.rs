use cacheme::cacheme;

#[cacheme(key = format!("cat:{id}"))]
fn touch_cat(id: u64) {
    let _ = id;
}

#[cacheme(key = format!("dog:{id}"))]
async fn touch_dog(id: u64) -> () {
    let _ = id;
}

fn main() {}
