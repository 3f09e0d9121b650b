//! `examples/browser/index.html` in a real headless Chromium against the real hub: the page
//! receives events, the hub is killed, events are published while it is down, a new hub starts
//! on the same port, and the page's own log (`window.mtLog`) must hold every event exactly once,
//! in order, with a resume reported `recovered: true`.
//!
//! The page is driven only through its query string; the log is read over the Chrome DevTools
//! Protocol (`Runtime.evaluate` on the page's target, found through `/json/list`), with
//! tokio-tungstenite. Events are published with history through Redis with
//! `scripts/publish.lua`, as other Monkeytown services publish. Nothing sleeps to synchronise:
//! every wait polls the page's log, or Redis, bounded by `DEADLINE`.
//!
//! Chromium is a test tool like redis-server (`scripts/install-test-tools.sh` installs it);
//! without it the test fails, naming what to install.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A headless Chromium showing one page, in its own process group with its own profile
/// directory; the group is killed and the directory removed on drop (a failing test too).
struct Chromium {
    child: Child,
    profile: std::path::PathBuf,
    devtools: std::net::SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Chromium {
    fn start(url: &str) -> Self {
        let profile = std::env::temp_dir().join(format!("mt-stream-chromium-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the launcher script, the browser and its helpers go together.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start chromium ({error}): this test needs it on PATH; \
                     scripts/install-test-tools.sh installs it (Debian: apt-get install chromium)"
                )
            });
        // Chromium prints `DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>` on
        // stderr; the rest of stderr is kept for the failure message.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
                    let addr = rest.split('/').next().unwrap_or_default().parse::<std::net::SocketAddr>();
                    let _ = port_tx.send(addr.ok());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let devtools = port_rx.recv_timeout(DEADLINE).ok().flatten();
        let mut chromium = Self { child, profile, devtools: ([127, 0, 0, 1], 0).into(), stderr };
        match devtools {
            Some(devtools) => chromium.devtools = devtools,
            // Dropping `chromium` on the way out kills it.
            None => panic!("chromium did not report its DevTools address; stderr:\n{}", chromium.stderr_text()),
        }
        chromium
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The DevTools WebSocket URL of the page showing `file://…` (it appears once loaded).
    async fn page_target(&self) -> String {
        wait_for("the page's DevTools target", || async {
            let targets: Value = serde_json::from_str(&devtools_get(self.devtools, "/json/list").await).ok()?;
            targets.as_array()?.iter().find_map(|target| {
                let is_page = target["type"] == "page" && target["url"].as_str()?.starts_with("file://");
                is_page.then(|| target["webSocketDebuggerUrl"].as_str().map(str::to_owned))?
            })
        })
        .await
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// GET on Chromium's DevTools HTTP endpoint; returns the body. Chromium keeps the connection
/// open after answering (common's `http` reads to the end), so the body is read by its
/// `Content-Length`.
async fn devtools_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await?);
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.get_mut().write_all(request.as_bytes()).await?;
        let (mut status, mut length) = (String::new(), 0);
        stream.read_line(&mut status).await?;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        assert!(status.starts_with("HTTP/1.1 200"), "DevTools answered {status:?} to GET {path}");
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(DEADLINE, exchange).await.expect("DevTools answered in time").expect("DevTools HTTP works")
}

/// A DevTools Protocol session on one page.
struct Page {
    socket: Client,
    next_id: u64,
}

impl Page {
    async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("the DevTools WebSocket accepts");
        Self { socket, next_id: 0 }
    }

    /// The page's `window.mtLog` (empty until the page's script has run).
    async fn log(&mut self) -> Vec<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let expression = "JSON.stringify(window.mtLog || [])";
        let request = json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": true}});
        self.socket.send(Message::text(request.to_string())).await.expect("DevTools takes the request");
        loop {
            let message = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("DevTools answers in time")
                .expect("the DevTools connection is open")
                .expect("a valid frame");
            let Message::Text(text) = message else { continue };
            let reply: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if reply["id"] != id {
                continue; // an event of some domain: none is enabled, but they are harmless
            }
            let value = reply["result"]["result"]["value"].as_str().unwrap_or_else(|| panic!("no value: {reply}"));
            return serde_json::from_str(value).expect("mtLog is JSON");
        }
    }

    /// Polls the log until `done` holds for it; returns it. Panics, showing the log, after
    /// [`DEADLINE`].
    async fn wait_log(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let log = self.log().await;
            if done(&log) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; the page's log: {}",
                json!(log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn entries<'a>(log: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    log.iter().filter(move |entry| entry["t"] == kind)
}

/// The `n` of every event the page logged, in order.
fn event_ns(log: &[Value]) -> Vec<u64> {
    entries(log, "event").map(|e| e["n"].as_u64().unwrap_or_else(|| panic!("event without n: {e}"))).collect()
}

/// Publishes `{"n":n}` on `demo` with `scripts/publish.lua`, as other services publish.
async fn publish(redis: &fred::clients::Client, script: &str, n: u64) {
    use fred::prelude::*;
    let payload = json!({ "n": n }).to_string();
    let args = vec![payload, "1000".to_owned(), "3600000".to_owned()];
    let id: String = redis.eval(script.to_owned(), "mt:demo", args).await.expect("publish.lua returns the id");
    parse_id(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_page_resumes_across_a_hub_restart_with_nothing_missed_or_twice() {
    let script_path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/publish.lua");
    let script = std::fs::read_to_string(script_path).unwrap_or_else(|e| panic!("{script_path}: {e}"));
    let redis = RedisProcess::start();
    let publisher = redis.client().await;
    // A fixed public port: the page keeps reconnecting to the same URL across the restart.
    let listen = format!("127.0.0.1:{}", free_port());
    let redis_url = redis.url();
    let env = [("REDIS_URL", redis_url.as_str()), ("MT_LISTEN", listen.as_str())];
    let mut hub = HubProcess::start(&env);

    let page_path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/browser/index.html");
    let url = format!("file://{page_path}?hub=ws://{listen}/ws&channels=demo&maxBackoffMs=500");
    let chromium = Chromium::start(&url);
    let target = chromium.page_target().await;
    let mut page = Page::connect(&target).await;

    // Connected and subscribed, and the hub's Redis subscription is in place: the first
    // connection has no id to resume from, so only events published from here on are its own.
    page.wait_log("the page's first subscription", |log| entries(log, "subscribed").count() == 1).await;
    wait_numsub(&publisher, "mt:demo", 1).await;
    for n in 1..=5 {
        publish(&publisher, &script, n).await;
    }
    page.wait_log("events 1..5 in the page", |log| event_ns(log).len() >= 5).await;

    hub.child.kill().expect("the hub is killed");
    hub.child.wait().expect("the hub is gone");
    drop(hub);
    page.wait_log("the page to see the hub go", |log| entries(log, "close").count() >= 1).await;
    for n in 6..=10 {
        publish(&publisher, &script, n).await;
    }

    let _hub = HubProcess::start(&env);
    page.wait_log("the page to reconnect", |log| entries(log, "open").count() == 2).await;
    for n in 11..=15 {
        publish(&publisher, &script, n).await;
    }
    // The last event is the page's cue; the resume's notice can come after it (live events that
    // arrived during the replay are handed over first).
    let log = page.wait_log("event 15 in the page", |log| event_ns(log).contains(&15)).await;
    assert_eq!(event_ns(&log), (1..=15).collect::<Vec<u64>>(), "each event once, in order; log: {}", json!(log));
    let log = page.wait_log("the resume's recovered notice", |log| entries(log, "recovered").count() >= 1).await;
    let dump = || json!(log).to_string();
    assert_eq!(event_ns(&log), (1..=15).collect::<Vec<u64>>(), "nothing after event 15; log: {}", dump());
    let recovered: Vec<&Value> = entries(&log, "recovered").collect();
    assert_eq!(recovered.len(), 1, "one resume; log: {}", dump());
    assert_eq!(recovered[0]["channel"], "demo", "{}", dump());
    assert_eq!(recovered[0]["recovered"], true, "the resume missed nothing; log: {}", dump());
    for kind in ["stale", "refetch", "stopped", "error"] {
        assert_eq!(entries(&log, kind).count(), 0, "no {kind} entry; log: {}", dump());
    }
    assert_eq!(entries(&log, "open").count(), 2, "{}", dump());
    drop(chromium);
}
