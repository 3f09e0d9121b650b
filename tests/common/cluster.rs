//! Real Redis topologies on free loopback ports, from the Debian packages: a Redis Cluster of
//! three primaries and three replicas ([`RedisCluster`]), and a primary, a replica and three
//! Sentinels ([`SentinelGroup`]). Each process can be killed (SIGKILL); every wait polls what
//! the servers report (`CLUSTER INFO`, `INFO replication`, `SENTINEL`) and is bounded.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;
use super::DEADLINE;

/// `redis-cli -p <port> <args>`: the reply as text (empty when the server is gone).
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli is installed with redis-server");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The value of `field` in an INFO-style reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| line.trim().strip_prefix(&format!("{field}:")).map(str::to_owned))
}

/// Polls `probe` (a blocking check) until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One redis-server process with its own directory.
struct Node {
    port: u16,
    child: Option<Child>,
}

fn spawn_server(port: u16, dir: &std::path::Path, args: &[&str]) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (the README's test command installs it)");
    wait_until("redis-server to listen", DEADLINE, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    child
}

impl Node {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A primary as `CLUSTER NODES` lists it.
#[derive(Debug, Clone)]
pub struct Primary {
    pub port: u16,
    pub id: String,
    /// `(first, last)` slot ranges.
    pub slots: Vec<(u16, u16)>,
}

impl Primary {
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(first, last)| first <= slot && slot <= last)
    }
}

/// Three primaries and three replicas (`--cluster-replicas 1`), node timeout 2 s, AOF on.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until it is `ok` everywhere and every
    /// replica's link to its primary is up.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("mt-stream-cluster-{}-{}", std::process::id(), free_port()));
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let node_dir = dir.join(port.to_string());
            let child = spawn_server(
                port,
                &node_dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--appendonly",
                    "yes",
                ],
            );
            nodes.push(Node { port, child: Some(child) });
        }
        let cluster = Self { nodes, dir };
        let addresses: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy();
        cluster
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port));
        let first = nodes.next().unwrap();
        let seeds: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
        format!("redis-cluster://{first}?{}", seeds.join("&"))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// Waits until every live node says `cluster_state:ok`, sees three primaries with slots,
    /// and every live replica's link is up.
    pub fn wait_healthy(&self) {
        wait_until("a healthy cluster", Duration::from_secs(60), || {
            let ports = self.live_ports();
            ports.iter().all(|&port| cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && self.primaries().len() == 3
                && ports.iter().all(|&port| {
                    let info = cli(port, &["INFO", "replication"]);
                    info_field(&info, "role").as_deref() == Some("master")
                        || info_field(&info, "master_link_status").as_deref() == Some("up")
                })
        });
    }

    /// The primaries with slots, as a live node lists them.
    pub fn primaries(&self) -> Vec<Primary> {
        let Some(&port) = self.live_ports().first() else { return Vec::new() };
        let nodes = cli(port, &["CLUSTER", "NODES"]);
        let mut primaries = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port = fields[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            let slots: Vec<(u16, u16)> = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            if !slots.is_empty() {
                primaries.push(Primary { port, id: fields[0].to_owned(), slots });
            }
        }
        primaries.sort_by_key(|p| p.port);
        primaries
    }

    /// The slot of `key` (CLUSTER KEYSLOT).
    pub fn keyslot(&self, key: &str) -> u16 {
        cli(self.live_ports()[0], &["CLUSTER", "KEYSLOT", key]).parse().expect("CLUSTER KEYSLOT answers a number")
    }

    /// The replica of the primary on `port`, as that primary reports it.
    pub fn replica_of(&self, port: u16) -> u16 {
        let info = cli(port, &["INFO", "replication"]);
        let slave = info_field(&info, "slave0").expect("the primary has a replica");
        slave.split(',').find_map(|kv| kv.strip_prefix("port=")).and_then(|p| p.parse().ok()).unwrap()
    }

    /// Waits until the replica of `primary` has everything the primary wrote: call it while
    /// nothing writes, so a kill -9 right after loses no acknowledged write.
    pub fn wait_replicated(&self, primary: u16) {
        let replica = self.replica_of(primary);
        wait_until("the replica to catch up", DEADLINE, || {
            let written = info_field(&cli(primary, &["INFO", "replication"]), "master_repl_offset");
            let copied = info_field(&cli(replica, &["INFO", "replication"]), "slave_repl_offset");
            written.is_some() && written == copied
        });
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster").kill();
    }

    /// Moves `slot` from the primary on `from` to the one on `to`, keys included, the way
    /// `redis-cli --cluster reshard` does: IMPORTING, MIGRATING, MIGRATE until empty, then
    /// SETSLOT NODE on both and on every other primary.
    pub fn migrate_slot(&self, slot: u16, from: &Primary, to: &Primary) {
        let slot_text = slot.to_string();
        assert_eq!(cli(to.port, &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from.id]), "OK");
        assert_eq!(cli(from.port, &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to.id]), "OK");
        loop {
            let keys = cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let port = to.port.to_string();
            args.extend([port.as_str(), "", "0", "5000", "KEYS"]);
            args.extend(keys.iter().copied());
            let reply = cli(from.port, &args);
            assert!(reply == "OK" || reply == "NOKEY", "MIGRATE answered {reply}");
        }
        for primary in self.primaries() {
            cli(primary.port, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to.id]);
        }
        wait_until("every node to agree on the slot's owner", DEADLINE, || {
            self.primaries().iter().any(|p| p.port == to.port && p.owns(slot))
                && !self.primaries().iter().any(|p| p.port == from.port && p.owns(slot))
        });
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, its replica and three Sentinels watching them as `mymaster` (quorum 2, down
/// after 2 s, failover timeout 10 s).
pub struct SentinelGroup {
    data: BTreeMap<u16, Node>,
    sentinels: Vec<Node>,
    dir: std::path::PathBuf,
}

pub const SENTINEL_SERVICE: &str = "mymaster";

impl SentinelGroup {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("mt-stream-sentinel-{}-{}", std::process::id(), free_port()));
        let (primary, replica) = (free_port(), free_port());
        let mut data = BTreeMap::new();
        let child = spawn_server(primary, &dir.join(primary.to_string()), &["--appendonly", "yes"]);
        data.insert(primary, Node { port: primary, child: Some(child) });
        let replica_of = ["--appendonly", "yes", "--replicaof", "127.0.0.1", &primary.to_string()];
        let child = spawn_server(replica, &dir.join(replica.to_string()), &replica_of);
        data.insert(replica, Node { port: replica, child: Some(child) });
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let sentinel_dir = dir.join(format!("sentinel-{port}"));
            std::fs::create_dir_all(&sentinel_dir).unwrap();
            let config = sentinel_dir.join("sentinel.conf");
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                    sentinel_dir.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs as a sentinel");
            wait_until("a sentinel to listen", DEADLINE, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            sentinels.push(Node { port, child: Some(child) });
        }
        let group = Self { data, sentinels, dir };
        group.wait_settled(primary);
        group
    }

    /// `redis-sentinel://` naming every sentinel.
    pub fn url(&self) -> String {
        let mut ports = self.sentinels.iter().map(|s| s.port);
        let first = ports.next().unwrap();
        let others: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-sentinel://127.0.0.1:{first}?sentinelServiceName={SENTINEL_SERVICE}&{}", others.join("&"))
    }

    /// The primary's port as the first sentinel names it.
    pub fn primary(&self) -> u16 {
        let reply = cli(self.sentinels[0].port, &["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]);
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok()).expect("the sentinel names a primary")
    }

    pub fn replica(&self) -> u16 {
        let primary = self.primary();
        *self.data.keys().find(|&&port| port != primary).unwrap()
    }

    /// Waits until every sentinel names `primary`, sees the replica and the other sentinels,
    /// and the replica's link is up.
    pub fn wait_settled(&self, primary: u16) {
        wait_until("the sentinels to agree", Duration::from_secs(60), || {
            self.sentinels.iter().all(|s| {
                let reply = cli(s.port, &["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]);
                let master = cli(s.port, &["SENTINEL", "master", SENTINEL_SERVICE]);
                let field = |name: &str| {
                    let lines: Vec<&str> = master.lines().collect();
                    lines
                        .iter()
                        .position(|l| l.trim() == name)
                        .and_then(|i| lines.get(i + 1))
                        .map(|v| v.trim().to_owned())
                };
                reply.lines().nth(1).map(str::trim) == Some(primary.to_string().as_str())
                    && field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            }) && self.data.keys().filter(|&&p| p != primary).all(|&replica| {
                info_field(&cli(replica, &["INFO", "replication"]), "master_link_status").as_deref() == Some("up")
            })
        });
    }

    /// Waits until the replica has everything the primary wrote (call it while nothing writes).
    pub fn wait_replicated(&self) {
        let (primary, replica) = (self.primary(), self.replica());
        wait_until("the replica to catch up", DEADLINE, || {
            let written = info_field(&cli(primary, &["INFO", "replication"]), "master_repl_offset");
            let copied = info_field(&cli(replica, &["INFO", "replication"]), "slave_repl_offset");
            written.is_some() && written == copied
        });
    }

    /// `SENTINEL FAILOVER`, then waits until the old primary is a replica of the new one.
    pub fn failover(&self) -> u16 {
        let (old, new) = (self.primary(), self.replica());
        assert_eq!(cli(self.sentinels[0].port, &["SENTINEL", "FAILOVER", SENTINEL_SERVICE]), "OK");
        wait_until("the old primary to be demoted", Duration::from_secs(30), || {
            let info = cli(old, &["INFO", "replication"]);
            info_field(&info, "role").as_deref() == Some("slave")
                && info_field(&info, "master_port").as_deref() == Some(new.to_string().as_str())
        });
        new
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for node in self.data.values_mut().chain(self.sentinels.iter_mut()) {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
