use cacheme::Node;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    id: u64,
}

#[derive(Node)]
#[node(key = "report:{id}", value = Report, local_ttl = 10)]
struct ReportNode {
    id: u64,
}

fn main() {}
