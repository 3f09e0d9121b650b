//! Real parts for the integration tests: the `mt-stream` binary, a private `redis-server` on a
//! free port, WebSocket clients (tokio-tungstenite, an implementation independent of ours, plus
//! a raw socket client for peers that misbehave), and small HTTP helpers for the admin port.
//!
//! Nothing here sleeps to synchronise: waits poll an observable state (a port, a metric, a
//! readiness answer) and are bounded by a deadline.

#![allow(dead_code)]

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
        let mut command = Command::new(env!("CARGO_BIN_EXE_mt-stream"));
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

/// A raw WebSocket client: the handshake by hand, then bytes. For peers that misbehave
/// (never answer pings, never read, send what a library would refuse to send).
pub struct RawClient {
    pub stream: TcpStream,
    frames: mt_testkit::ServerFrames,
}

impl RawClient {
    /// Upgrades at `/ws{query}`; `recv_buffer` shrinks the socket's receive buffer.
    pub async fn connect(addr: SocketAddr, query: &str, recv_buffer: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.expect("connects");
        let request = format!(
            "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        let header_end = loop {
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "server closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        assert!(buffer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buffer));
        let mut frames = mt_testkit::ServerFrames::new();
        frames.extend(&buffer[header_end..]);
        Self { stream, frames }
    }

    /// Sends one masked client frame (framed by the test kit, not by the hub's code).
    pub async fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.stream.write_all(&mt_testkit::client_frame(opcode, fin, payload)).await.unwrap();
    }

    /// Reads one server frame: (opcode, payload); `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(frame) = self.frames.next_frame().expect("the server frames correctly") {
                return Some((frame.opcode, frame.payload));
            }
            let mut chunk = [0u8; 16 << 10];
            let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("server answers in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.frames.extend(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame; returns its code (panics at end of stream).
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.read_frame().await {
                Some((0x8, payload)) => return u16::from_be_bytes([payload[0], payload[1]]),
                Some(_) => continue,
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}
