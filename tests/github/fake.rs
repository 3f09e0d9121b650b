//! An in-process fake of the GitHub Events API: a real HTTP server on 127.0.0.1 that answers
//! each path from a script of replies (then a fallback), or from a live feed that makes a new
//! event per request, and records every request (when, what, which headers).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::common::wait_for;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    /// A 200 with these events (newest first, as GitHub lists them).
    pub fn events(events: &[Value]) -> Self {
        Self::new(200, Value::Array(events.to_vec()).to_string())
    }

    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub wall: SystemTime,
    /// Path and query.
    pub target: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
}

/// A feed that makes one new event per request of its path (ids from `next`), answering
/// every event so far, newest first, with `X-Poll-Interval: 1`.
struct Live {
    path: String,
    next: u64,
    events: Vec<Value>,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    fallback: HashMap<String, Reply>,
    live: Option<Live>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct FakeGithub {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeGithub {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues replies for `target` (path and query), answered in order.
    pub fn script(&self, target: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut state = self.state.lock().unwrap();
        state.scripts.entry(target.to_owned()).or_default().extend(replies);
    }

    /// The answer for `target` once its script is used up.
    pub fn fallback(&self, target: &str, reply: Reply) {
        self.state.lock().unwrap().fallback.insert(target.to_owned(), reply);
    }

    /// Serves `path` from a live feed whose first event has id `first`.
    pub fn live(&self, path: &str, first: u64) {
        self.state.lock().unwrap().live = Some(Live { path: path.to_owned(), next: first, events: Vec::new() });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests of `target` so far.
    pub fn seen_for(&self, target: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.target == target).collect()
    }

    /// Waits until `target` was requested `count` times; returns those requests.
    pub async fn wait_requests(&self, target: &str, count: usize) -> Vec<Seen> {
        wait_for(&format!("{count} requests of {target}"), || async {
            let seen = self.seen_for(target);
            (seen.len() >= count).then_some(seen)
        })
        .await
    }
}

fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let target = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        at: Instant::now(),
        wall: SystemTime::now(),
        target: target.clone(),
        if_none_match: header("if-none-match"),
        authorization: header("authorization"),
    });
    let reply = if let Some(live) = state.live.as_mut().filter(|l| target.starts_with(&l.path)) {
        live.events.insert(0, super::api_event(live.next, &format!("live {}", live.next)));
        live.events.truncate(100);
        live.next += 1;
        Reply::events(&live.events).header("etag", format!("\"n{}\"", live.next)).header("x-poll-interval", 1)
    } else if let Some(reply) = state.scripts.get_mut(&target).and_then(VecDeque::pop_front) {
        reply
    } else if let Some(reply) = state.fallback.get(&target) {
        reply.clone()
    } else {
        Reply::new(404, r#"{"message":"Not Found"}"#)
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}
