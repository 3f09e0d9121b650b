//! Admission on both listeners: the admin port's probes stay answerable while other sockets
//! are held open on it; every refusal carries `Connection: close` and ends its connection, so a
//! refused client frees its slot at once; the WebSocket handshake is validated (key, version,
//! HTTP/1.1); the publish endpoint takes any case of the bearer scheme and does not wait for a
//! body forever.
//!
//! These speak raw HTTP over TCP sockets, so what is on the wire (status, headers, the close)
//! is what is checked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::*;

/// The key of RFC 6455's example handshake: the base64 of 16 bytes.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// One HTTP answer as read off the socket, and whether the server closed the socket after it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    closed: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A `Connection` header lists the `close` token.
    fn says_close(&self) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("close")))
    }

    /// Panics unless this is a refusal with `status` that said `Connection: close` and closed.
    fn assert_refused_and_closed(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: {} {:?}", self.status, self.body);
        assert!(self.says_close(), "{what}: no `Connection: close` in {:?}", self.headers);
        assert!(self.closed, "{what}: the hub kept the connection open after answering");
    }
}

/// Reads one answer (head, then `Content-Length` bytes of body) and then waits up to
/// `close_within` for the server to close the socket (EOF or a reset, nothing more sent).
/// A `101` answer is returned as soon as its head is read.
async fn read_answer(stream: &mut TcpStream, close_within: Duration) -> Result<Answer, String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Err(format!("closed without an answer (read {:?})", String::from_utf8_lossy(&buffer))),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) => return Err(format!("no answer: {error}")),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status =
        status_line.get(9..12).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut answer = Answer { status, headers, body: String::new(), closed: false };
    if status == 101 {
        return Ok(answer);
    }
    let length: usize = answer.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    answer.body = String::from_utf8_lossy(&body).into_owned();
    answer.closed = matches!(tokio::time::timeout(close_within, stream.read(&mut chunk)).await, Ok(Ok(0) | Err(_)));
    Ok(answer)
}

/// Sends `request` on a new connection and reads the answer (see [`read_answer`]).
async fn exchange(addr: SocketAddr, request: &str, close_within: Duration) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    read_answer(&mut stream, close_within).await
}

/// [`exchange`], bounded by [`DEADLINE`].
async fn ask(addr: SocketAddr, request: &str) -> Answer {
    tokio::time::timeout(DEADLINE, exchange(addr, request, Duration::from_secs(5)))
        .await
        .expect("answered in time")
        .unwrap_or_else(|error| panic!("{request:?}: {error}"))
}

/// An upgrade request; `None` leaves the header out.
fn upgrade_request(target: &str, http: &str, key: Option<&str>, version: Option<&str>) -> String {
    let mut request = format!("GET {target} {http}\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    if let Some(version) = version {
        request.push_str(&format!("Sec-WebSocket-Version: {version}\r\n"));
    }
    request + "\r\n"
}

/// Holds `count` sockets open on the admin port, half of them silent and half with an unfinished
/// request line, each reopened 250 ms after the hub closes it (as a leaking or hostile client
/// would), while a kubelet-like prober asks `/healthz` and `/readyz` every 100 ms for 3 s
/// (longer than the admin header timeout): every probe must answer 200 within 1 s.
async fn probes_answer_while_sockets_are_held(count: usize) {
    let hub = HubProcess::start(&[]);
    let opened = Arc::new(AtomicUsize::new(0));
    let mut holders = Vec::new();
    for i in 0..count {
        let (opened, admin) = (Arc::clone(&opened), hub.admin);
        holders.push(tokio::spawn(async move {
            loop {
                if let Ok(mut socket) = TcpStream::connect(admin).await {
                    opened.fetch_add(1, Ordering::Relaxed);
                    if i % 2 == 1 {
                        let _ = socket.write_all(b"GET /metrics HTTP/1.1\r\n").await;
                    }
                    // Held until the hub closes it (or the test aborts this task).
                    let _ = socket.read(&mut [0u8; 64]).await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    wait_for("every holder connected", || async { (opened.load(Ordering::Relaxed) >= count).then_some(()) }).await;

    let start = Instant::now();
    let (mut answered, mut failures) = (0, Vec::new());
    while start.elapsed() < Duration::from_secs(3) {
        for path in ["/healthz", "/readyz"] {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: 10.0.0.1:9090\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n");
            let at = start.elapsed();
            match tokio::time::timeout(Duration::from_secs(1), exchange(hub.admin, &request, Duration::from_secs(1)))
                .await
            {
                Ok(Ok(answer)) if answer.status == 200 => answered += 1,
                Ok(Ok(answer)) => failures.push(format!("{path} at {at:?}: {}", answer.status)),
                Ok(Err(error)) => failures.push(format!("{path} at {at:?}: {error}")),
                Err(_) => failures.push(format!("{path} at {at:?}: no answer within 1 s")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reopened = opened.load(Ordering::Relaxed);
    for holder in holders {
        holder.abort();
    }
    assert!(
        failures.is_empty(),
        "{count} held sockets: {answered} probes answered, {} failed: {failures:?}",
        failures.len()
    );
    assert!(answered >= 20, "{answered}");
    // The sockets really were held past the admin port's room: the hub closed some to make room.
    assert!(reopened > count, "the hub closed none of the {count} held sockets");
    let evicted = hub.metric("mt_stream_admin_connections_evicted_total").await;
    assert!(evicted >= (count - 64) as f64, "{evicted} evictions for {count} held sockets");
}

/// 70 sockets held on the admin port (more than its 64 slots) leave the probes answerable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_70_sockets_are_held_on_the_admin_port() {
    probes_answer_while_sockets_are_held(70).await;
}

/// 200 sockets held on the admin port leave the probes answerable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_200_sockets_are_held_on_the_admin_port() {
    probes_answer_while_sockets_are_held(200).await;
}

/// A burst of 1100 refused upgrades, more than the public port's 1024 slots for connections in
/// their HTTP phase, each holding its socket until the hub closes it: every one gets its answer
/// (503 at the connection cap, 400 for a bad query, 404 off `/ws`) with `Connection: close`,
/// and the hub closes it at once (well within the 10 s header timeout), so refused clients
/// free their slots and none goes unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_are_answered_with_connection_close_and_closed() {
    let hub = HubProcess::start(&[("MT_MAX_CONNECTIONS", "2")]);
    let _full = [hub.subscriber(&["x"]).await, hub.subscriber(&["x"]).await];
    let mut tasks = Vec::new();
    for i in 0..1100 {
        let public = hub.public;
        tasks.push(tokio::spawn(async move {
            let (target, status) = match i % 3 {
                0 => ("/ws", 503),
                1 => ("/ws?channels=a%20b", 400),
                _ => ("/elsewhere", 404),
            };
            let request = upgrade_request(target, "HTTP/1.1", Some(KEY), Some("13"));
            let answer = tokio::time::timeout(DEADLINE, exchange(public, &request, Duration::from_secs(5)))
                .await
                .map_err(|_| format!("{target}: no answer in time"))?
                .map_err(|error| format!("{target}: {error}"))?;
            if answer.status != status || !answer.says_close() || !answer.closed {
                return Err(format!(
                    "{target}: {} (wanted {status}), Connection: close {}, closed {}",
                    answer.status,
                    answer.says_close(),
                    answer.closed
                ));
            }
            Ok(())
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Err(failure) = task.await.unwrap() {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 1100 refusals went wrong, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The cap still admits nobody, and the two clients are served.
    hub.publish("x", r#"{"n":1}"#).await;
}

/// The handshake is checked as RFC 6455 says: a `Sec-WebSocket-Key` missing, empty or not the
/// base64 of exactly 16 bytes gets 400; a version other than 13 (or none) gets an answer
/// carrying `Sec-WebSocket-Version: 13`; an HTTP/1.0 upgrade is refused; each refusal closes the
/// connection. A correct handshake still upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_is_validated() {
    let hub = HubProcess::start(&[]);
    for key in [
        None,
        Some(""),
        Some("abc"),
        Some("AAAAAAAAAAAAAAAAAAAA"),         // 15 bytes
        Some("AAAAAAAAAAAAAAAAAAAAAAA="),     // 17 bytes
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAA"), // 21 bytes
        Some("dGhlIHNhbXBsZSBub25jZQ"),       // 16 bytes, padding left out
        Some("dGhlIHNhbXBsZSBub25jZR=="),     // non-zero trailing bits
        Some("dGhlIHNhbXBsZSBub25jZQ=!"),
        Some("dGhl-HNhbXBsZSBub25jZQ=="), // URL-safe alphabet
    ] {
        let answer = ask(hub.public, &upgrade_request("/ws", "HTTP/1.1", key, Some("13"))).await;
        answer.assert_refused_and_closed(400, &format!("key {key:?}"));
    }
    for version in [Some("8"), Some("14"), Some("13, 8"), Some(""), None] {
        let answer = ask(hub.public, &upgrade_request("/ws", "HTTP/1.1", Some(KEY), version)).await;
        assert!(matches!(answer.status, 400 | 426), "version {version:?}: {}", answer.status);
        assert_eq!(answer.header("sec-websocket-version"), Some("13"), "version {version:?}: {:?}", answer.headers);
        answer.assert_refused_and_closed(answer.status, &format!("version {version:?}"));
    }
    let answer = ask(hub.public, &upgrade_request("/ws", "HTTP/1.0", Some(KEY), Some("13"))).await;
    assert_ne!(answer.status, 101, "an HTTP/1.0 request was upgraded");
    answer.assert_refused_and_closed(400, "HTTP/1.0");

    // The right handshake is still accepted, and the refusals were counted.
    let mut client = RawClient::connect(hub.public, "?channels=x", None).await;
    let (opcode, _) = client.read_frame().await.expect("the subscribed reply");
    assert_eq!(opcode, 1);
    assert_eq!(hub.metric("mt_stream_connections_rejected_total").await, 16.0);
}

/// The bearer scheme is case-insensitive (RFC 7235): `bearer` and `BEARER` publish. Refusals on
/// the admin port (401, 404, 405) carry `Connection: close` and end the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive_and_admin_refusals_close() {
    let hub = HubProcess::start(&[]);
    let mut client = hub.subscriber(&["cased"]).await;
    for (n, scheme) in ["bearer", "BEARER", "Bearer"].into_iter().enumerate() {
        let auth = format!("{scheme} {TOKEN}");
        let body = format!(r#"{{"n":{n}}}"#);
        let (status, reply) =
            http(hub.admin, "POST", "/publish/cased", &[("Authorization", &auth)], body.as_bytes()).await;
        assert_eq!(status, 202, "{scheme}: {reply}");
        assert_eq!(next_json(&mut client).await["data"]["n"], n);
    }
    let unauthorised = format!(
        "POST /publish/cased HTTP/1.1\r\nHost: hub\r\nAuthorization: Basic {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    ask(hub.admin, &unauthorised).await.assert_refused_and_closed(401, "Basic scheme");
    ask(hub.admin, "GET /nowhere HTTP/1.1\r\nHost: hub\r\n\r\n").await.assert_refused_and_closed(404, "unknown path");
    ask(hub.admin, "POST /healthz HTTP/1.1\r\nHost: hub\r\nContent-Length: 0\r\n\r\n")
        .await
        .assert_refused_and_closed(405, "POST /healthz");
    // A successful answer keeps the connection for the next request (keep-alive is untouched).
    let ok = tokio::time::timeout(
        DEADLINE,
        exchange(hub.admin, "GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n", Duration::from_millis(300)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((ok.status, ok.says_close(), ok.closed), (200, false, false));
}

/// An authorised publish whose body never finishes is answered 408 after the body timeout (5 s)
/// and its connection closed; nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_publish_body_times_out_with_408() {
    let hub = HubProcess::start(&[]);
    let mut client = hub.subscriber(&["slow"]).await;
    let mut stream = TcpStream::connect(hub.admin).await.unwrap();
    let start = Instant::now();
    let request = format!(
        "POST /publish/slow HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"n\":"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stream, Duration::from_secs(2)))
        .await
        .expect("the hub answers an unfinished body within 10 s")
        .expect("an HTTP answer");
    let waited = start.elapsed();
    answer.assert_refused_and_closed(408, "unfinished body");
    assert!(waited >= Duration::from_secs(4), "answered after {waited:?}, before the body timeout");
    // Nothing was published: the next event the client sees is this one.
    hub.publish("slow", r#"{"n":"after"}"#).await;
    assert_eq!(next_json(&mut client).await["data"]["n"], "after");
}
