//! Real parts for the integration tests: the `mt-stream` binary, a private `redis-server` on a
//! free port, WebSocket clients (tokio-tungstenite, an implementation independent of ours, plus
//! a raw socket client for peers that misbehave), and small HTTP helpers for the admin port.
//!
//! Nothing here sleeps to synchronise: waits poll an observable state (a port, a metric, a
//! readiness answer) and are bounded by a deadline.
//!
//! Split in three: this module (the hub process, HTTP and WebSocket helpers), [`redis`] (the
//! private redis-server and Redis pub/sub counts) and [`raw_client`] (the raw WebSocket client),
//! all re-exported here so that `use common::*;` reaches everything. Each test target compiles
//! this module on its own and uses only part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod cluster;
mod raw_client;
mod redis;

// Not every target uses all of these, and `dead_code` does not cover an unused re-export.
#[allow(unused_imports)]
pub use self::raw_client::RawClient;
#[allow(unused_imports)]
pub use self::redis::{free_port, numsub, wait_numsub, RedisProcess};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest any single wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `mt-stream serve`; killed on drop.
pub struct HubProcess {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Log lines after start-up, collected by a thread.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub const TOKEN: &str = "test-publish-token-0123456789";

impl HubProcess {
    /// Starts the binary on ephemeral ports with `env` added, and waits for its listeners.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_mt-stream")), env)
    }

    /// As [`HubProcess::start`], confined to one CPU core (`taskset -c 0`; the process keeps
    /// its pid), as a CPU-limited pod is.
    pub fn start_on_one_core(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new("taskset");
        command.args(["-c", "0", env!("CARGO_BIN_EXE_mt-stream")]);
        Self::start_with(command, env)
    }

    fn start_with(mut command: Command, env: &[(&str, &str)]) -> Self {
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MT_LISTEN", "127.0.0.1:0")
            .env("MT_ADMIN_LISTEN", "127.0.0.1:0")
            .env("MT_PUBLISH_TOKEN", TOKEN)
            .env("MT_DRAIN_SECONDS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the mt-stream binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut public, mut admin) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("log output is UTF-8");
            if line.contains("mt-stream serving") {
                for token in line.split_whitespace() {
                    if let Some(v) = token.strip_prefix("public=") {
                        public = v.parse().ok();
                    }
                    if let Some(v) = token.strip_prefix("admin=") {
                        admin = v.parse().ok();
                    }
                }
                break;
            }
        }
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (Some(public), Some(admin)) = (public, admin) else {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
            panic!("mt-stream did not report its listeners; stderr: {stderr}");
        };
        Self { child, public, admin, logs }
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.public, query)
    }

    /// Connects a client subscribed to `channels` (via the query) and waits for the reply.
    pub async fn subscriber(&self, channels: &[&str]) -> Client {
        let (mut client, _) =
            tokio_tungstenite::connect_async(self.ws_url(&format!("?channels={}", channels.join(","))))
                .await
                .expect("upgrade succeeds");
        let reply = next_json(&mut client).await;
        assert_eq!(reply["op"], "subscribed", "{reply}");
        client
    }

    /// GET on the admin port.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, &[], b"").await
    }

    /// POST /publish/{channel} with the test token.
    pub async fn publish(&self, channel: &str, body: &str) -> (u16, String) {
        let auth = format!("Bearer {TOKEN}");
        http(self.admin, "POST", &format!("/publish/{channel}"), &[("Authorization", &auth)], body.as_bytes()).await
    }

    /// A metric's value summed over its label sets (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics").await;
        metric_value(&body, name)
    }

    /// Waits until `readyz` answers `status`; returns its body.
    pub async fn wait_ready(&self, status: u16) -> String {
        wait_for(&format!("readyz {status}"), || async {
            let (code, body) = self.admin_get("/readyz").await;
            (code == status).then_some(body)
        })
        .await
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums the samples of `name` in a Prometheus text exposition.
pub fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `probe` until it yields a value; panics after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.1 exchange (Connection: close); returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(DEADLINE, attempt).await.expect("http answered in time").expect("http works");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The next text message as JSON (pings are answered by tungstenite and skipped).
pub async fn next_json(client: &mut Client) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, client.next())
            .await
            .expect("a message arrives in time")
            .expect("the connection is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; returns its code.
pub async fn close_code(client: &mut Client) -> u16 {
    loop {
        let message = tokio::time::timeout(DEADLINE, client.next()).await.expect("close arrives in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("connection failed before a close frame: {error}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// Sends a JSON text message.
pub async fn send_json(client: &mut Client, value: serde_json::Value) {
    client.send(Message::text(value.to_string())).await.expect("send works");
}

/// An event id `<ms>-<seq>` as the pair it compares as; panics (naming it) when malformed.
pub fn parse_id(id: &str) -> (u64, u64) {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parsed: Option<(u64, u64)> = id
        .split_once('-')
        .filter(|(ms, seq)| digits(ms) && digits(seq))
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
    parsed.unwrap_or_else(|| panic!("{id:?} is not an event id of the form <ms>-<seq>"))
}

/// Receives JSON messages until `done` holds for one; returns them all, that one last. At most
/// `limit` messages, each within [`DEADLINE`].
pub async fn recv_until(
    client: &mut Client,
    limit: usize,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut received = Vec::new();
    loop {
        assert!(received.len() < limit, "{limit} messages and still not done; last: {:?}", received.last());
        let message = next_json(client).await;
        let stop = done(&message);
        received.push(message);
        if stop {
            return received;
        }
    }
}
