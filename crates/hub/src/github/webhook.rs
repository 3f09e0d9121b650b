//! `POST /github/webhook` on the public listener: GitHub's deliveries, verified and published.
//!
//! In order, each step answering before the next costs anything: the route is off (404) without
//! `MT_GITHUB_WEBHOOK_SECRET`; a content type other than `application/json` gets 415; a
//! `Content-Length` over [`MAX_WEBHOOK_BYTES`] gets 413 unread; at most
//! [`CONCURRENT_UPLOADS`] bodies are read at once (so unsigned junk costs bounded memory); the
//! body must arrive within [`BODY_TIMEOUT`] (408) and stay under the limit (413); the
//! `X-Hub-Signature-256` is checked on the raw bytes before any parsing (401). Only then is the
//! JSON read, the compact event built and published on its channels, once per
//! `X-GitHub-Delivery` across every pod (a redelivery answers 200 `duplicate`), and kept in
//! history, before the 2xx: GitHub's 10 s timeout is never near.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::event::{Activity, Payload};
use super::metrics::DeliveryResult;
use super::{signature, Github, Outcome};
use crate::server::{text, Body};
use crate::source::Source;

/// Largest delivery accepted (GitHub caps payloads at 25 MB; the events the hub maps are far
/// smaller: a push lists at most 20 commits).
pub const MAX_WEBHOOK_BYTES: usize = 4 << 20;
/// Deliveries whose bodies are read at the same time; the next waits up to [`UPLOAD_WAIT`].
pub const CONCURRENT_UPLOADS: usize = 4;
const UPLOAD_WAIT: Duration = Duration::from_secs(5);
/// How long the body may take once the headers are read.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivery id is remembered: a redelivery within it is not published again.
pub const DELIVERY_MEMORY: Duration = Duration::from_secs(24 * 3600);

fn answer(github: &Github, result: DeliveryResult, status: StatusCode, message: impl Into<String>) -> Response<Body> {
    github.metrics.delivery(result);
    text(status, message.into() + "\n")
}

fn json_content(request: &Request<Incoming>) -> bool {
    let Some(value) = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media = value.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
}

/// Handles one delivery.
pub async fn handle(request: Request<Incoming>, github: &Github, source: &Source) -> Response<Body> {
    let Some(secret) = &github.settings.webhook_secret else {
        return text(StatusCode::NOT_FOUND, "GitHub webhooks are off: MT_GITHUB_WEBHOOK_SECRET is not set\n");
    };
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    }
    if !json_content(&request) {
        return answer(
            github,
            DeliveryResult::UnsupportedType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json (set the webhook's content type to application/json)",
        );
    }
    let too_large = || {
        answer(
            github,
            DeliveryResult::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {MAX_WEBHOOK_BYTES} bytes"),
        )
    };
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_WEBHOOK_BYTES as u64) {
        return too_large();
    }
    let Ok(Ok(_upload)) = tokio::time::timeout(UPLOAD_WAIT, github.uploads.acquire()).await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many deliveries at once; retry\n");
    };
    let (parts, body) = request.into_parts();
    let body: Bytes = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_WEBHOOK_BYTES).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return too_large(),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, format!("body not received within {BODY_TIMEOUT:?}\n")),
    };
    let signature = parts.headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    if let Err(error) = signature::verify(&secret.0, signature, &body) {
        return answer(github, DeliveryResult::BadSignature, StatusCode::UNAUTHORIZED, error.to_string());
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let (Some(event), Some(delivery)) = (header("x-github-event"), header("x-github-delivery")) else {
        return answer(
            github,
            DeliveryResult::BadRequest,
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Event or X-GitHub-Delivery header",
        );
    };
    // The delivery id becomes part of a Redis key: GitHub's are UUIDs.
    if delivery.is_empty() || delivery.len() > 64 || !delivery.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return answer(github, DeliveryResult::BadRequest, StatusCode::BAD_REQUEST, "malformed X-GitHub-Delivery");
    }
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(error) => {
            return answer(
                github,
                DeliveryResult::BadRequest,
                StatusCode::BAD_REQUEST,
                format!("body is not JSON: {error}"),
            )
        }
    };
    drop(body);
    if let Some(repo) = &payload.repository {
        // Polling of this repository pauses while its webhook delivers.
        github.webhook_seen(&repo.full_name).await;
    }
    if event == "ping" {
        return answer(github, DeliveryResult::Ping, StatusCode::OK, "pong");
    }
    let Some(activity) = Activity::from_payload(event, &payload, None, None, "webhook", delivery) else {
        return answer(github, DeliveryResult::Ignored, StatusCode::ACCEPTED, "ignored: not about a repository");
    };
    match github.publish(source, &activity, &format!("delivery:{delivery}"), DELIVERY_MEMORY).await {
        Ok(Outcome::Published(Some(id))) => {
            answer(github, DeliveryResult::Published, StatusCode::ACCEPTED, format!("published {id}"))
        }
        Ok(Outcome::Published(None)) => answer(github, DeliveryResult::Published, StatusCode::ACCEPTED, "published"),
        Ok(Outcome::Duplicate) => {
            answer(github, DeliveryResult::Duplicate, StatusCode::OK, "duplicate delivery: published before")
        }
        Ok(Outcome::NoChannel) => answer(
            github,
            DeliveryResult::Ignored,
            StatusCode::ACCEPTED,
            "ignored: the repository's name is too long for a channel",
        ),
        Err(error) => {
            tracing::warn!(%error, event, delivery, "GitHub webhook delivery not published");
            answer(github, DeliveryResult::Unavailable, StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
    }
}
