use cacheme::{Node, cacheme};

#[derive(Node)]
#[node(key = "cat:{id}", value = String)]
struct CatNode {
    id: u64,
}

#[cacheme(key = format!("a:{id}"), tag = cats, ttl = "5 minutes")]
fn tag_and_ttl(id: u64) -> String {
    id.to_string()
}

#[cacheme(key = format!("b:{}", cacheme_result))]
fn result_in_key(id: u64) -> String {
    id.to_string()
}

#[cacheme(key = format!("b:{id}"), stale)]
fn stale_without_value(id: u64) -> String {
    id.to_string()
}

#[cacheme(node = CatNode { id }, tag = "cats", invalid_sources = [changes])]
fn node_and_tag(id: u64) -> String {
    id.to_string()
}

#[cacheme]
fn destructured((x, y): (u64, u64)) -> String {
    format!("{x}:{y}")
}

#[cacheme(key = "c")]
const fn constant() -> u64 {
    1
}

fn changes() -> tokio::sync::mpsc::UnboundedReceiver<cacheme::sources::SourceEvent> {
    tokio::sync::mpsc::unbounded_channel().1
}

fn main() {}
