//! The hub on highly available Redis deployments, all real servers on loopback ports: a Redis
//! Cluster of three primaries and three replicas (sharded pub/sub), a primary with a replica
//! and three Sentinels, and a TLS server with a private CA.
//!
//! - `cluster`: three hubs, nine clients, 100 channels over all three shards, under load: a
//!   primary killed with SIGKILL (its replica promoted), a slot migrated between primaries, a
//!   hub killed and restarted; every client ends with every event of its channels once, in
//!   order. Also: a migrated slot's channel keeps delivering (the dropped `sunsubscribe`).
//! - `sentinel`: the same load through a `SENTINEL FAILOVER`.
//! - `tls`: `rediss://` with `MT_REDIS_CA_FILE`, and the refusals around it.
//!
//! The tests take several servers each, so they run one at a time (a lock).

#[path = "../common/mod.rs"]
mod common;
mod load;
mod scenario;

mod cluster;
mod sentinel;
mod tls;

/// One topology at a time: each test starts up to nine processes on a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
