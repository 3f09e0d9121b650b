//! The GitHub REST API as the poller needs it: one `GET` of an events page, with the headers
//! that steer polling read out of the answer (`ETag`, `X-Poll-Interval`, the rate limit,
//! `Retry-After`, the `Link` to the next page). HTTPS through rustls with the system's roots;
//! the token goes only to the configured API's own origin, and never into an error or a log.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, LINK, RETRY_AFTER, USER_AGENT};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::settings::{ApiUrl, GithubToken};

/// Events per page: the API's largest page.
pub const PER_PAGE: usize = 100;
/// Longest wait for one answer, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest page body read (100 events with their payloads).
const MAX_PAGE_BYTES: usize = 16 << 20;

/// Why a request got no answer to act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answer body unreadable or over {MAX_PAGE_BYTES} bytes")]
    Body,
}

/// One answer, with the headers that steer polling.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub etag: Option<String>,
    pub poll_interval: Option<Duration>,
    pub rate_remaining: Option<u64>,
    /// When the rate-limit window resets, in seconds since the epoch.
    pub rate_reset: Option<u64>,
    pub retry_after: Option<Duration>,
    /// The next page's URL, when the answer has one on the API's own origin.
    pub next: Option<String>,
    pub body: Bytes,
}

pub struct Api {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: ApiUrl,
    /// `scheme://authority` of the base: where the token may go.
    origin: String,
    token: Option<GithubToken>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    header(headers, name)?.parse().ok()
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

impl Api {
    pub fn new(base: ApiUrl, token: Option<GithubToken>) -> Self {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match builder.with_native_roots() {
            Ok(builder) => builder.https_or_http().enable_http1().build(),
            Err(error) => {
                tracing::warn!(%error, "no system CA certificates: HTTPS to the GitHub API will fail");
                let roots = rustls::RootCertStore::empty();
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .build()
            }
        };
        let uri: hyper::Uri = base.as_str().parse().expect("the API URL was validated");
        let origin =
            format!("{}://{}", uri.scheme_str().unwrap_or("https"), uri.authority().map(|a| a.as_str()).unwrap_or(""));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { client, base, origin, token }
    }

    /// Whether `url` is on the API's own origin (the only place the token goes).
    fn same_origin(&self, url: &str) -> bool {
        url.strip_prefix(self.origin.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The first page's URL of an events path (`/repos/o/r/events`).
    pub fn first_page(&self, path: &str) -> String {
        format!("{}{path}?per_page={PER_PAGE}", self.base.as_str())
    }

    /// `GET url`, with `If-None-Match: etag` when given.
    pub async fn get(&self, url: &str, etag: Option<&str>) -> Result<Page, ApiError> {
        let mut request = Request::get(url)
            .header(ACCEPT, "application/vnd.github+json")
            .header(USER_AGENT, concat!("mt-stream/", env!("CARGO_PKG_VERSION")))
            .header("x-github-api-version", "2022-11-28")
            .body(Full::new(Bytes::new()))
            .map_err(|error| ApiError::Request(error.to_string()))?;
        if let Some(etag) = etag.and_then(|e| e.parse().ok()) {
            request.headers_mut().insert(IF_NONE_MATCH, etag);
        }
        if let Some(token) = &self.token {
            if self.same_origin(url) {
                if let Ok(value) = token.header().parse() {
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
        }
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                // The error's chain names the host and the cause (refused, DNS, TLS); never a header.
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                ApiError::Request(text)
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_PAGE_BYTES).collect().await.map_err(|_| ApiError::Body)?.to_bytes();
            Ok::<_, ApiError>((parts, body))
        };
        let (parts, body) =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| ApiError::Timeout(REQUEST_TIMEOUT))??;
        let headers = &parts.headers;
        let next =
            header(headers, LINK.as_str()).and_then(next_link).filter(|next| self.same_origin(next)).map(str::to_owned);
        Ok(Page {
            status: parts.status.as_u16(),
            etag: header(headers, ETAG.as_str()).map(str::to_owned),
            poll_interval: number(headers, "x-poll-interval").map(Duration::from_secs),
            rate_remaining: number(headers, "x-ratelimit-remaining"),
            rate_reset: number(headers, "x-ratelimit-reset"),
            retry_after: number(headers, RETRY_AFTER.as_str()).map(Duration::from_secs),
            next,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let link = r#"<https://api.github.com/repositories/1/events?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/events?per_page=100&page=3>; rel="last""#;
        assert_eq!(next_link(link), Some("https://api.github.com/repositories/1/events?per_page=100&page=2"));
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }
}
