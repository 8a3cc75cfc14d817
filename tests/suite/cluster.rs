//! Redis Cluster: what only a cluster can show. The suites that run on one
//! server run on the cluster too (`on_every_store!` in nodes.rs,
//! invalidation.rs and correctness.rs); here are the decorator, the herd
//! across processes, local-tier coherence, which slots a node's operations
//! touch, failover under load and live resharding.
