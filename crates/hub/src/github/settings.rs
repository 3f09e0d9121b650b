//! The GitHub source's settings as typed values, each parsed from one environment variable by
//! `crate::config` (which names the variable in any error): the token, the webhook secret, what
//! to poll, and the API's base URL. Secrets never print: their `Debug` is redacted.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default of `MT_GITHUB_API_URL`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Default of `MT_GITHUB_WEBHOOK_SILENCE_SECONDS`: a polled repository whose webhook delivered
/// within this long is not polled.
pub const DEFAULT_WEBHOOK_SILENCE: Duration = Duration::from_secs(900);
/// Default of `MT_GITHUB_LEASE_SECONDS`: how long the poller's lease outlives its holder.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Shortest accepted webhook secret, in bytes.
const MIN_SECRET: usize = 16;

/// Every setting of the GitHub source.
#[derive(Debug, Clone, Default)]
pub struct GithubSettings {
    /// `GITHUB_TOKEN`: sent to the API as a bearer token (unset: unauthenticated, 60 requests
    /// per hour).
    pub token: Option<GithubToken>,
    /// `MT_GITHUB_WEBHOOK_SECRET`: unset = `POST /github/webhook` answers 404.
    pub webhook_secret: Option<WebhookSecret>,
    /// `MT_GITHUB_REPOS`: repositories and organisations to poll (empty = no polling).
    pub poll: Vec<PollTarget>,
    /// `MT_GITHUB_API_URL`, without a trailing slash.
    pub api_url: ApiUrl,
    /// `MT_GITHUB_WEBHOOK_SILENCE_SECONDS`.
    pub webhook_silence: Duration,
    /// `MT_GITHUB_LEASE_SECONDS`.
    pub lease: Duration,
}

impl GithubSettings {
    /// Whether anything of the GitHub source runs.
    pub fn enabled(&self) -> bool {
        self.webhook_secret.is_some() || !self.poll.is_empty()
    }

    /// The start-up log's summary: which paths are on, what is polled where; never a secret.
    pub fn summary(&self) -> String {
        if !self.enabled() {
            return "off".to_owned();
        }
        let mut parts = Vec::new();
        if self.webhook_secret.is_some() {
            parts.push("webhook on /github/webhook".to_owned());
        }
        if !self.poll.is_empty() {
            let targets: Vec<String> = self.poll.iter().map(PollTarget::key).collect();
            let token = if self.token.is_some() { "token set" } else { "no token: 60 requests/hour" };
            parts.push(format!(
                "polling {} via {} ({token}; lease {} s, webhook silence {} s)",
                targets.join(","),
                self.api_url.as_str(),
                self.lease.as_secs(),
                self.webhook_silence.as_secs()
            ));
        }
        parts.join("; ")
    }
}

/// Why a GitHub setting did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

/// A GitHub token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct GithubToken(String);

impl GithubToken {
    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for GithubToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GithubToken(redacted)")
    }
}

impl FromStr for GithubToken {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let token = text.trim();
        if token.bytes().any(|b| !b.is_ascii_graphic()) {
            // Said without the token: a stray newline from `echo` into a Secret is the usual cause.
            return Err(Invalid("must be printable ASCII without spaces or line breaks".into()));
        }
        Ok(Self(token.to_owned()))
    }
}

/// The webhook secret, as an HMAC-SHA256 key. Never printed.
#[derive(Clone)]
pub struct WebhookSecret(pub ring::hmac::Key);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

impl FromStr for WebhookSecret {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < MIN_SECRET {
            return Err(Invalid(format!(
                "must be at least {MIN_SECRET} bytes (got {}): a short secret can be guessed",
                text.len()
            )));
        }
        Ok(Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, text.as_bytes())))
    }
}

/// One entry of `MT_GITHUB_REPOS`: `owner/repo`, or an organisation's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollTarget {
    Repo { owner: String, name: String },
    Org(String),
}

impl PollTarget {
    /// The Events API path that lists its events.
    pub fn events_path(&self) -> String {
        match self {
            Self::Repo { owner, name } => format!("/repos/{owner}/{name}/events"),
            Self::Org(org) => format!("/orgs/{org}/events"),
        }
    }

    /// Names it in logs, metrics-free state and the Redis cursor key.
    pub fn key(&self) -> String {
        match self {
            Self::Repo { owner, name } => format!("repo:{owner}/{name}").to_ascii_lowercase(),
            Self::Org(org) => format!("org:{org}").to_ascii_lowercase(),
        }
    }

    /// `owner/repo` (lower case) of a repository target.
    pub fn repo(&self) -> Option<String> {
        match self {
            Self::Repo { owner, name } => Some(format!("{owner}/{name}").to_ascii_lowercase()),
            Self::Org(_) => None,
        }
    }
}

/// A GitHub owner or repository name as GitHub allows them: 1–100 bytes of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

impl FromStr for PollTarget {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || Invalid(format!("expected owner/repo or an organisation name, got {text:?}"));
        match text.split_once('/') {
            Some((owner, name)) if valid_name(owner) && valid_name(name) => {
                Ok(Self::Repo { owner: owner.to_owned(), name: name.to_owned() })
            }
            None if valid_name(text) => Ok(Self::Org(text.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// `MT_GITHUB_REPOS`: comma-separated targets, duplicates removed.
pub struct PollTargets(pub Vec<PollTarget>);

impl FromStr for PollTargets {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut targets: Vec<PollTarget> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let target: PollTarget = entry.parse()?;
            if !targets.iter().any(|t| t.key() == target.key()) {
                targets.push(target);
            }
        }
        Ok(Self(targets))
    }
}

/// The API's base URL: `http` or `https`, a host, an optional path prefix (GitHub Enterprise
/// Server serves the API under `/api/v3`), no query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl(String);

impl ApiUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ApiUrl {
    fn default() -> Self {
        Self(DEFAULT_API_URL.to_owned())
    }
}

impl FromStr for ApiUrl {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().trim_end_matches('/');
        let bad = |why: &str| Invalid(format!("{why}, got {text:?}"));
        let uri: hyper::Uri = text.parse().map_err(|_| bad("expected an http(s) URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("expected an http:// or https:// URL"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("expected a host in the URL"));
        }
        if uri.query().is_some() {
            return Err(bad("expected no query in the URL"));
        }
        Ok(Self(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_targets() {
        let PollTargets(targets) = " Monkeytown/web , monkeytown/web,acme-org,".parse().unwrap();
        assert_eq!(
            targets,
            vec![
                PollTarget::Repo { owner: "Monkeytown".into(), name: "web".into() },
                PollTarget::Org("acme-org".into())
            ]
        );
        assert_eq!(targets[0].key(), "repo:monkeytown/web");
        assert_eq!(targets[0].events_path(), "/repos/Monkeytown/web/events");
        assert_eq!(targets[1].events_path(), "/orgs/acme-org/events");
        for bad in ["a/b/c", "a b", "/x", "x/", "a/..", "ö/x"] {
            assert!(bad.parse::<PollTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn api_urls() {
        assert_eq!("https://api.github.com/".parse::<ApiUrl>().unwrap().as_str(), "https://api.github.com");
        assert_eq!("https://ghe.example/api/v3".parse::<ApiUrl>().unwrap().as_str(), "https://ghe.example/api/v3");
        for bad in ["ftp://x", "api.github.com", "https://x/?a=b", ""] {
            assert!(bad.parse::<ApiUrl>().is_err(), "{bad}");
        }
    }

    /// Secrets are refused when short and never shown by `Debug`.
    #[test]
    fn secrets_stay_secret() {
        assert!("short".parse::<WebhookSecret>().is_err());
        let token: GithubToken = "ghp_0123456789abcdef".parse().unwrap();
        assert!(!format!("{token:?}").contains("ghp_"));
        assert!("ghp_abc\n123".parse::<GithubToken>().is_err());
        let secret: WebhookSecret = "It's a Secret to Everybody".parse().unwrap();
        assert!(!format!("{secret:?}").contains("Secret to"));
    }
}
