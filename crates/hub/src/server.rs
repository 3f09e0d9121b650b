//! The public listener's routes (`/ws`, and `/github/webhook` handled in
//! [`crate::github::webhook`]) and the WebSocket upgrade handler (the accept loop both
//! listeners share is [`crate::listener`]).
//!
//! Admission happens here, the last point where HTTP metadata is visible: drain state, the
//! handshake itself ([`crate::upgrade::check_upgrade`]), the `Origin` allow-list, the `channels`
//! query, and the connection cap, all answered with a plain HTTP status before any WebSocket
//! exists (and, as every refusal, with `Connection: close`). An admitted upgrade becomes a
//! tracked [`session`] on the raw TCP stream.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ORIGIN, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::RejectReason;
use crate::protocol;
use crate::session;
use crate::shutdown::Shutdown;
use crate::source::Source;
use crate::upgrade::check_upgrade;

/// `Retry-After` seconds for refused upgrades (the chart's other pods usually have room).
const RETRY_AFTER_SECONDS: &str = "5";

/// Everything the handlers share.
pub struct App {
    pub config: Config,
    /// Who may read which channel.
    pub access: Arc<crate::auth::Access>,
    pub hub: Arc<Hub>,
    pub source: Source,
    pub recovery: Arc<crate::recovery::Recovery>,
    pub registry: prometheus_client::registry::Registry,
    /// `process_*`, refreshed at each scrape.
    pub process: crate::exposition::ProcessMetrics,
    pub shutdown: Shutdown,
    /// Refused upgrades, logged without flooding.
    pub refusals: crate::refusal_log::RefusalLog,
    /// The GitHub source (webhooks and polling).
    pub github: Arc<crate::github::Github>,
}

pub type Body = Full<Bytes>;

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Socket options for client connections: no Nagle delay, and the send buffer the budget
/// reserves (cgroup v2 charges it to the pod). The receive buffer stays the kernel's during
/// the HTTP phase, which hyper reads as it arrives: an 8 KiB one made a 40 KB webhook body take
/// 480 ms (the sender stalled on the small window); a WebSocket gets it at the upgrade
/// ([`tune_session_socket`]).
pub fn tune_client_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_send_buffer_size(mt_budget::SOCKET_SEND_BUFFER.bytes() as usize);
}

/// The receive buffer the budget reserves for a WebSocket connection (clients send little).
fn tune_session_socket(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_recv_buffer_size(mt_budget::SOCKET_RECV_BUFFER.bytes() as usize);
}

/// Socket options for the admin port.
pub fn tune_admin_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// The public router: `/ws` (its method is checked with the rest of the handshake) and
/// `/github/webhook`.
pub async fn handle_public(request: Request<Incoming>, app: Arc<App>) -> Response<Body> {
    match request.uri().path() {
        "/ws" => upgrade(request, &app),
        "/github/webhook" => crate::github::webhook::handle(request, &app.github, &app.source).await,
        _ => text(StatusCode::NOT_FOUND, "not found; WebSocket clients connect to /ws\n"),
    }
}

/// Refuses an upgrade: counts it, logs it (rate-limited) with `message` as the detail, answers.
fn refuse(app: &App, reason: RejectReason, status: StatusCode, message: String) -> Response<Body> {
    app.refusals.refused(reason, &message);
    answer_refusal(app, reason, status, message)
}

/// Counts a refusal and builds its answer (the caller logged it).
fn answer_refusal(app: &App, reason: RejectReason, status: StatusCode, message: String) -> Response<Body> {
    app.hub.metrics.rejected(reason);
    let mut response = text(status, message + "\n");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

fn origin_allowed(allowed: &[String], origin: Option<&HeaderValue>) -> bool {
    let Some(origin) = origin.and_then(|o| o.to_str().ok()) else { return false };
    let origin = origin.trim_end_matches('/');
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

fn upgrade(mut request: Request<Incoming>, app: &Arc<App>) -> Response<Body> {
    if app.hub.is_draining() {
        return refuse(app, RejectReason::Draining, StatusCode::SERVICE_UNAVAILABLE, "server is draining".into());
    }
    if let Err(refusal) = check_upgrade(request.method(), request.version(), request.headers()) {
        let mut response = refuse(app, RejectReason::BadRequest, refusal.status(), refusal.to_string());
        for (name, value) in refusal.headers() {
            response.headers_mut().append(name, HeaderValue::from_static(value));
        }
        return response;
    }
    if let Some(allowed) = &app.config.allowed_origins {
        if !origin_allowed(allowed, request.headers().get(ORIGIN)) {
            // The refused origin in the log (quoted and cut: the client chose it).
            let origin: Option<String> = request
                .headers()
                .get(ORIGIN)
                .map(|o| String::from_utf8_lossy(o.as_bytes()).chars().take(100).collect());
            app.refusals.refused(RejectReason::Origin, &format!("origin {origin:?} is not in MT_ALLOWED_ORIGINS"));
            return answer_refusal(app, RejectReason::Origin, StatusCode::FORBIDDEN, "origin not allowed".into());
        }
    }
    let query = match protocol::parse_connect_query(request.uri().query()) {
        Ok(query) => query,
        Err(error) => return refuse(app, RejectReason::BadRequest, StatusCode::BAD_REQUEST, error.to_string()),
    };
    let Some(admission) = app.hub.try_admit() else {
        return refuse(
            app,
            RejectReason::Capacity,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("connection limit of {} reached", app.hub.budget().max_connections),
        );
    };
    // The handshake was checked above; this computes `Sec-WebSocket-Accept`.
    let (response, upgraded) = match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok(pair) => pair,
        Err(error) => return refuse(app, RejectReason::BadRequest, StatusCode::BAD_REQUEST, error.to_string()),
    };
    let services = session::Services {
        hub: Arc::clone(&app.hub),
        recovery: Arc::clone(&app.recovery),
        shutdown: app.shutdown.clone(),
        access: Arc::clone(&app.access),
    };
    app.shutdown.spawn(async move {
        let _admission = admission;
        let websocket = match upgraded.await {
            Ok(websocket) => websocket,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        // fastwebsockets did the handshake; we take the raw TCP stream back so the writer can
        // put pre-framed shared bytes on it with vectored writes.
        let upgraded = websocket.into_inner().into_inner();
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // `read_buf` is a view into hyper's 8 KiB connection buffer and would keep all
                // of it alive for the life of the connection; copy out what the client sent
                // early (usually nothing) and let the buffer go.
                let leftover = Bytes::copy_from_slice(&parts.read_buf);
                drop(parts.read_buf);
                let stream = parts.io.into_inner();
                tune_session_socket(&stream);
                session::run(services, stream, leftover, query).await
            }
            Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
        }
    });
    let (parts, _empty) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Origins match exactly (case-insensitive, trailing slash ignored); a missing one fails.
    #[test]
    fn origin_matching() {
        let allowed = vec!["https://monkeytown.dev".to_owned()];
        assert!(origin_allowed(&allowed, Some(&HeaderValue::from_static("https://monkeytown.dev"))));
        assert!(origin_allowed(&allowed, Some(&HeaderValue::from_static("https://MonkeyTown.dev/"))));
        assert!(!origin_allowed(&allowed, Some(&HeaderValue::from_static("https://evil.dev"))));
        assert!(!origin_allowed(&allowed, Some(&HeaderValue::from_static("https://monkeytown.dev.evil"))));
        assert!(!origin_allowed(&allowed, None));
    }
}
