use cacheme::Node;

#[derive(Node)]
#[node(key = Self::cache_key, value = String, miss = Self::on_miss, invalid_nodes = Self::groups)]
struct CatNode {
    id: u64,
}

impl CatNode {
    fn cache_key(&self) -> &str {
        "cat"
    }

    fn on_miss(&self) {}

    fn groups(&self) -> u64 {
        self.id
    }
}

fn main() {}
