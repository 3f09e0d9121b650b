//! The HTTP phase of both listeners: accepting connections, bounding how many are in their
//! HTTP phase at once, the header timeout, and ending the conversation after a refusal. The
//! routes are elsewhere (`server.rs` for the public port, `admin.rs` for the admin port).
//!
//! ## Refusals close the connection
//!
//! Every answer with a status of 400 or more gets `Connection: close` here, whatever the
//! handler wrote, and hyper closes the connection once the answer is written. A refused client
//! thus frees its slot at once instead of holding it, in keep-alive, until the header timeout:
//! without this, a burst of 2000 upgrades to a full pod left the 1000 refused ones holding the
//! public port's 1024 slots, and most later clients got no HTTP answer at all.
//!
//! ## When every slot is taken
//!
//! Each listener bounds its connections in their HTTP phase ([`Limits::max_pending`]), so
//! sockets that never send a request cost bounded memory. When all are taken, the listener's
//! [`WhenFull`] decides:
//!
//! - **public: [`WhenFull::Refuse`]**: the new connection is closed unanswered (counted as
//!   `connections_rejected_total{reason="overload"}`). A WebSocket client is in its HTTP phase for
//!   one round trip, then holds a connection slot (`MT_MAX_CONNECTIONS`) instead.
//! - **admin: [`WhenFull::EvictOldestIdle`]**: the oldest connection that is not serving a
//!   request is closed to make room, and the new one is read (counted as
//!   `admin_connections_evicted_total`). Only if all of them are serving requests is the new one
//!   closed unanswered.
//!
//! Why eviction on the admin port: the kubelet's probes share it with Prometheus' scrapes and
//! `POST /publish`, so whoever holds its slots with idle sockets (a leaking client, a scanner)
//! made `/healthz` unreachable and the kubelet restarted a healthy pod, dropping every client.
//! A reserve of slots for probes is impossible, since a probe is only known once its request is
//! read. The alternatives weighed:
//!
//! - a shorter header timeout with more slots bounds how long held sockets block the port, but
//!   whoever holds more sockets than there are slots, and reopens them as they are closed,
//!   still starves the probes, for ever;
//! - a separate probe port moves the problem rather than removing it: that port has slots too,
//!   is reachable by whatever reaches the pod (a NetworkPolicy cannot single out the kubelet,
//!   whose probes come from the node), and it adds a setting, a container port and a second
//!   listener to run;
//! - evicting the oldest idle connection (what nginx does with idle keep-alive connections when
//!   it runs out) means a new connection is always read, however many sockets are held, without
//!   a new port or setting, and it protects scrapes and publishes as much as probes.
//!
//! A connection is *idle* while none of its requests is being handled: before its request's
//! headers are complete (silent, or sending them slowly) and between keep-alive requests. A
//! request being handled (a scrape, a publish waiting for its body, at most 5 s) is never cut.
//! A probe's connection is the newest, so it is the last candidate: only a client opening
//! [`ADMIN`]`.max_pending` connections between a probe's connect and the read of its request
//! could push it out, which is why the chart's NetworkPolicy admits only Prometheus to the
//! admin port (docs/chart.md). The admin header timeout is 2 s, not the public port's 10 s:
//! the kubelet, Prometheus and in-cluster publishers send their headers at once, while
//! WebSocket clients on slow mobile networks may need longer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::metrics::RejectReason;
use crate::server::{App, Body};

/// What a listener does when every slot for connections in their HTTP phase is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Close the new connection unanswered.
    Refuse,
    /// Close the oldest connection not serving a request and admit the new one; refuse only if
    /// every connection is serving a request.
    EvictOldestIdle,
}

/// The bounds of one listener's HTTP phase.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections in their HTTP phase at once (before the upgrade on the public port; for
    /// their whole life on the admin port).
    pub max_pending: usize,
    /// How long a client may take to send a request's headers (the first, or the next on a
    /// keep-alive connection) before it is disconnected.
    pub header_timeout: Duration,
    /// What happens to a new connection when `max_pending` are open.
    pub when_full: WhenFull,
}

/// The public (WebSocket) listener.
pub const PUBLIC: Limits =
    Limits { max_pending: 1024, header_timeout: Duration::from_secs(10), when_full: WhenFull::Refuse };

/// The admin listener (probes, metrics, publish).
pub const ADMIN: Limits =
    Limits { max_pending: 64, header_timeout: Duration::from_secs(2), when_full: WhenFull::EvictOldestIdle };

/// A connection's activity, shared by its task (which marks requests) and the pool (which
/// evicts only what it can move from `IDLE` to `EVICTED`).
const IDLE: u8 = 0;
const BUSY: u8 = 1;
const EVICTED: u8 = 2;

/// The connections of one listener in their HTTP phase, oldest first.
struct Pending {
    open: Mutex<Open>,
}

struct Open {
    next_id: u64,
    slots: BTreeMap<u64, Slot>,
}

struct Slot {
    activity: Arc<AtomicU8>,
    task: AbortHandle,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Nothing panics while holding it; a poisoned pool is still consistent.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Open {
    /// Closes the oldest idle connection; false if every one is serving a request.
    fn evict_oldest_idle(&mut self) -> bool {
        let victim = self
            .slots
            .iter()
            .find(|(_, slot)| {
                slot.activity.compare_exchange(IDLE, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
            })
            .map(|(&id, _)| id);
        let Some(slot) = victim.and_then(|id| self.slots.remove(&id)) else { return false };
        // Dropping the task's future drops its socket: the peer sees the connection close.
        slot.task.abort();
        true
    }
}

/// Frees its connection's slot when the connection's task ends or is aborted.
struct Lease {
    pending: Arc<Pending>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pending.lock().slots.remove(&self.id);
    }
}

/// Accepts connections until the task is aborted; each is served by `handler` over HTTP/1.1
/// with upgrades enabled, within `limits`. `tune` is applied to each accepted socket.
pub async fn accept_loop<H, F>(listener: TcpListener, app: Arc<App>, limits: Limits, tune: fn(&TcpStream), handler: H)
where
    H: Fn(Request<Incoming>, Arc<App>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let pending = Arc::new(Pending { open: Mutex::new(Open { next_id: 0, slots: BTreeMap::new() }) });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut open = pending.lock();
        if open.slots.len() >= limits.max_pending {
            if limits.when_full == WhenFull::EvictOldestIdle && open.evict_oldest_idle() {
                app.hub.metrics.admin_connections_evicted.inc();
            } else {
                drop(open);
                app.hub.metrics.rejected(RejectReason::Overload);
                app.refusals
                    .refused(RejectReason::Overload, "too many connections in their HTTP phase; closed unanswered");
                drop(stream);
                continue;
            }
        }
        tune(&stream);
        let id = open.next_id;
        open.next_id += 1;
        let activity = Arc::new(AtomicU8::new(IDLE));
        let lease = Lease { pending: Arc::clone(&pending), id };
        // Spawned while the pool is locked, so the slot is in the pool before its task can end
        // and remove it.
        let task = tokio::spawn(serve_connection(
            stream,
            Arc::clone(&app),
            limits.header_timeout,
            handler,
            Arc::clone(&activity),
            lease,
        ));
        open.slots.insert(id, Slot { activity, task: task.abort_handle() });
    }
}

async fn serve_connection<H, F>(
    stream: TcpStream,
    app: Arc<App>,
    header_timeout: Duration,
    handler: H,
    activity: Arc<AtomicU8>,
    _lease: Lease,
) where
    H: Fn(Request<Incoming>, Arc<App>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let app = Arc::clone(&app);
        let activity = Arc::clone(&activity);
        async move {
            if activity.compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // Evicted just as its request arrived: the task is being aborted, so this answer
                // is most likely never written.
                let mut response = crate::server::text(hyper::StatusCode::SERVICE_UNAVAILABLE, "evicted\n");
                close_after(&mut response);
                return Ok::<_, Infallible>(response.map(|body| Tracked { body, activity }));
            }
            let mut response = handler(request, app).await;
            if response.status().as_u16() >= 400 {
                close_after(&mut response);
            }
            Ok(response.map(|body| Tracked { body, activity }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// Adds `close` to the answer's `Connection` header (keeping tokens already there, such as a
/// 426's `upgrade`); hyper then closes the connection once the answer is written.
pub fn close_after(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    let tokens: Vec<&str> = headers.get_all(CONNECTION).iter().filter_map(|v| v.to_str().ok()).collect();
    let value = if tokens.is_empty() { "close".to_owned() } else { format!("{}, close", tokens.join(", ")) };
    let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("close"));
    headers.insert(CONNECTION, value);
}

/// An answer's body that marks its connection idle again once hyper is done with it.
struct Tracked {
    body: Body,
    activity: Arc<AtomicU8>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let _ = self.activity.compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(states: &[u8]) -> (Open, Vec<Arc<AtomicU8>>, Vec<tokio::task::JoinHandle<()>>) {
        let mut open = Open { next_id: 0, slots: BTreeMap::new() };
        let (mut activities, mut tasks) = (Vec::new(), Vec::new());
        for &state in states {
            let activity = Arc::new(AtomicU8::new(state));
            let task = tokio::spawn(std::future::pending::<()>());
            open.slots.insert(open.next_id, Slot { activity: Arc::clone(&activity), task: task.abort_handle() });
            open.next_id += 1;
            activities.push(activity);
            tasks.push(task);
        }
        (open, activities, tasks)
    }

    /// Eviction takes the oldest idle connection, skips busy ones, aborts its task, and
    /// refuses when every connection is busy.
    #[tokio::test]
    async fn evicts_the_oldest_idle_connection() {
        let (mut open, activities, tasks) = pool(&[BUSY, IDLE, BUSY, IDLE]);
        assert!(open.evict_oldest_idle());
        assert_eq!(open.slots.keys().copied().collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(activities[1].load(Ordering::Acquire), EVICTED);
        let [_, evicted, _, _] = <[_; 4]>::try_from(tasks).ok().unwrap();
        assert!(evicted.await.unwrap_err().is_cancelled());
        assert!(open.evict_oldest_idle());
        assert_eq!(open.slots.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert!(!open.evict_oldest_idle(), "busy connections are never evicted");
        assert_eq!(open.slots.len(), 2);
        // A request that ends makes its connection a candidate again.
        activities[2].store(IDLE, Ordering::Release);
        assert!(open.evict_oldest_idle());
        assert_eq!(open.slots.keys().copied().collect::<Vec<_>>(), [0]);
    }

    /// A connection whose request began cannot be evicted, and one evicted cannot begin one.
    #[test]
    fn requests_and_eviction_exclude_each_other() {
        let activity = AtomicU8::new(IDLE);
        assert!(activity.compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire).is_ok());
        assert!(activity.compare_exchange(IDLE, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_err());
        let activity = Arc::new(AtomicU8::new(BUSY));
        drop(Tracked { body: Body::new(Bytes::new()), activity: Arc::clone(&activity) });
        assert_eq!(activity.load(Ordering::Acquire), IDLE, "the answer written, the connection is idle");
        activity.store(EVICTED, Ordering::Release);
        drop(Tracked { body: Body::new(Bytes::new()), activity: Arc::clone(&activity) });
        assert_eq!(activity.load(Ordering::Acquire), EVICTED);
    }

    /// `close` is added to the tokens already there, once.
    #[test]
    fn close_after_keeps_other_tokens() {
        let mut response = Response::new(Body::new(Bytes::new()));
        close_after(&mut response);
        assert_eq!(response.headers()[CONNECTION], "close");
        let mut response = Response::new(Body::new(Bytes::new()));
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
        close_after(&mut response);
        assert_eq!(response.headers().get_all(CONNECTION).iter().collect::<Vec<_>>(), ["upgrade, close"]);
    }
}
