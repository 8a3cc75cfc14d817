use cacheme::{Cache, cacheme};

struct Shelf {
    cache: Cache,
}

impl Shelf {
    // No key: the default key serializes the arguments, `self` included.
    #[cacheme(cache = self.cache)]
    fn count(&self, kind: &str) -> usize {
        kind.len()
    }
}

fn main() {}
