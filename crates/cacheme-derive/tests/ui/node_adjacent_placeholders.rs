use cacheme::Node;

// `{a}{b}`: a=1,b=23 and a=12,b=3 would give the same key.
#[derive(Node)]
#[node(key = "pair:{a}{b}", value = String)]
struct Pair {
    a: u64,
    b: u64,
}

// `-` can appear in values, so it does not separate them.
#[derive(Node)]
#[node(key = "range:{from}-{to}", value = String)]
struct Range {
    from: i64,
    to: i64,
}

fn main() {}
