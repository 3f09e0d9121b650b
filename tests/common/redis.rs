//! A private `redis-server` on a free port for each test (killed on drop, restartable on the
//! same port and directory), and Redis's own count of a channel's subscribers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_for, DEADLINE};

/// A private redis-server on a free port; killed on drop.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
    /// Arguments added after the defaults (a later directive wins), on every (re)start.
    extra_args: Vec<String>,
}

impl RedisProcess {
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`RedisProcess::start`] with `args` after the defaults (no persistence, bound to
    /// 127.0.0.1, its own temp `--dir`), e.g. `["--appendonly", "yes", "--appendfsync",
    /// "always"]`; a restart keeps the same port, directory and arguments.
    pub fn start_with_args(args: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("mt-stream-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra_args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut redis = Self { port, child: None, dir, extra_args };
        redis.spawn();
        redis
    }

    /// The server's working directory (where an AOF lives).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (the README's test command installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A fred client to this server.
    pub async fn client(&self) -> fred::clients::Client {
        use fred::prelude::*;
        let client = Builder::from_config(Config::from_url(&self.url()).unwrap()).build().unwrap();
        client.init().await.expect("redis answers");
        client
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Subscribers Redis counts on `channel` (PUBSUB NUMSUB).
pub async fn numsub(client: &fred::clients::Client, channel: &str) -> i64 {
    use fred::prelude::*;
    let reply: Vec<fred::types::Value> = client
        .custom(fred::types::CustomCommand::new_static("PUBSUB", None, false), vec!["NUMSUB", channel])
        .await
        .expect("PUBSUB NUMSUB works");
    reply.get(1).and_then(|v| v.as_i64()).unwrap_or(0)
}

/// Waits until Redis counts exactly `want` subscribers on `channel` (each hub subscribes once).
pub async fn wait_numsub(client: &fred::clients::Client, channel: &str, want: i64) {
    wait_for(&format!("{want} redis subscriber(s) on {channel}"), || async {
        (numsub(client, channel).await == want).then_some(())
    })
    .await;
}
