//! The internal (admin) listener's routes: liveness, readiness, metrics and HTTP publish.
//!
//! Liveness and readiness are different ideas: `/healthz` says the process and its runtime
//! answer (restart me if not); `/readyz` says this pod should get new clients now (the source
//! delivers, it is not draining, it has room).
//!
//! What keeps the probes answerable whatever other clients of this port do (held sockets,
//! slow requests) is the listener's: [`crate::listener::ADMIN`] evicts idle connections to
//! read new ones, and a publish body that does not arrive within [`PUBLISH_BODY_TIMEOUT`] is
//! answered 408.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::Access;
use crate::exposition;
use crate::protocol::ChannelName;
use crate::server::{text, App, Body};

/// Largest event body `POST /publish` accepts.
pub const MAX_PUBLISH_BYTES: usize = 64 << 10;
/// How long `POST /publish` waits for the whole body once its headers are read (an in-cluster
/// publisher sends 64 KiB in milliseconds); past it the answer is 408.
pub const PUBLISH_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin router.
pub async fn handle(request: Request<Incoming>, app: Arc<App>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readiness(&app),
        (&Method::GET, "/metrics") => metrics(&app, request.headers().get(ACCEPT).and_then(|v| v.to_str().ok())),
        (&Method::POST, p) if p.starts_with("/publish/") => publish(request, &app, &p["/publish/".len()..]).await,
        (_, "/healthz" | "/readyz" | "/metrics") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Why this pod should not get new clients, if it should not.
pub fn not_ready_reason(app: &App) -> Option<String> {
    if app.hub.is_draining() {
        return Some("draining".into());
    }
    if let Err(reason) = app.source.readiness() {
        return Some(reason.to_string());
    }
    let max = app.hub.budget().max_connections.get();
    if app.hub.connection_count() >= max {
        return Some(format!("at connection capacity ({max})"));
    }
    None
}

fn readiness(app: &App) -> Response<Body> {
    match not_ready_reason(app) {
        None if app.access.is_open() => text(StatusCode::OK, format!("ready\nwarning: {}\n", Access::OPEN_WARNING)),
        None => text(StatusCode::OK, "ready\n"),
        Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason + "\n"),
    }
}

fn metrics(app: &App, accept: Option<&str>) -> Response<Body> {
    // Gauges that are states rather than events are refreshed at scrape time.
    let _ = app.source.readiness();
    // With the embedded broker there is no subscription to fall silent: the gauge stays 0
    // rather than growing between publishes (which would look like a silent source).
    if let (crate::source::Source::Redis(_), Some(age)) = (&app.source, app.source.last_event_age()) {
        app.hub.metrics.source_last_event_age_seconds.set(age.as_secs_f64());
    }
    app.process.refresh();
    let mut body = String::with_capacity(8 << 10);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &app.registry) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {error}\n"));
    }
    let (body, content_type) = match exposition::wants_openmetrics(accept) {
        true => (body, exposition::OPENMETRICS),
        false => (exposition::to_classic(&body), exposition::CLASSIC),
    };
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Compares without an early exit, so the token cannot be guessed byte by byte from timings.
fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut difference = (a.len() != b.len()) as u8;
    for (i, expected_byte) in a.iter().enumerate() {
        difference |= expected_byte ^ b.get(i).copied().unwrap_or(0);
    }
    difference == 0
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1) and may be followed by several spaces; another scheme gives `None`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

async fn publish(request: Request<Incoming>, app: &App, channel: &str) -> Response<Body> {
    let Some(expected) = &app.config.publish_token else {
        return text(StatusCode::FORBIDDEN, "publishing over HTTP is disabled: set MT_PUBLISH_TOKEN\n");
    };
    let given = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token).unwrap_or("");
    if !token_matches(expected, given) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
    }
    let channel = match ChannelName::new(channel) {
        Ok(channel) => channel,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let upload =
        tokio::time::timeout(PUBLISH_BODY_TIMEOUT, Limited::new(request.into_body(), MAX_PUBLISH_BYTES).collect());
    let body: Bytes = match upload.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("event body over {MAX_PUBLISH_BYTES} bytes, or the upload failed\n"),
            )
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!("event body not received within {} s\n", PUBLISH_BODY_TIMEOUT.as_secs()),
            )
        }
    };
    match app.source.publish(&channel, body).await {
        Ok(Some(id)) => text(StatusCode::ACCEPTED, format!("published {id}\n")),
        Ok(None) => text(StatusCode::ACCEPTED, "published\n"),
        Err(error) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the exact token matches.
    #[test]
    fn token_comparison() {
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdef", "0123456789abcdeF"));
        assert!(!token_matches("0123456789abcdef", "0123456789abcde"));
        assert!(!token_matches("0123456789abcdef", ""));
    }

    /// Any case of the scheme, one or more spaces; other schemes and a bare token give nothing.
    #[test]
    fn bearer_scheme() {
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR tok", "Bearer   tok"] {
            assert_eq!(bearer_token(value), Some("tok"), "{value:?}");
        }
        for value in ["Basic tok", "Bearertok", "tok", "", "Bearer-tok", "XBearer tok"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
        assert_eq!(bearer_token("Bearer "), Some(""));
    }
}
