//! `mt-stream publish CHANNEL DATA`: publishes one event the way Monkeytown services do: on
//! Redis when `REDIS_URL` is set (with the history script, `scripts/publish.lua`, when the
//! channel keeps history; else a plain `PUBLISH <prefix><channel> <data>`), otherwise through
//! a running hub's `POST /publish/{channel}` on its admin port (embedded broker).

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::config::{ConfigError, ConfigErrors, DEFAULT_ADMIN_PORT, DEFAULT_CHANNEL_PREFIX};
use crate::protocol::{ChannelName, ChannelPrefix};
use crate::source::redis::Layout;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `mt-stream publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Channel to publish on.
    pub channel: String,
    /// The event payload (JSON is delivered inline, anything else as a string).
    pub data: String,
    /// Redis to publish to (as `serve` takes it); no `REDIS_URL` = the hub's admin endpoint.
    #[command(flatten)]
    pub redis: crate::config::RedisArgs,
    /// Redis channel prefix.
    #[arg(long, env = "MT_CHANNEL_PREFIX", default_value = DEFAULT_CHANNEL_PREFIX)]
    pub channel_prefix: String,
    /// A hub's admin address, used when no Redis is configured.
    #[arg(long, env = "MT_ADMIN_ADDR", default_value_t = format!("127.0.0.1:{DEFAULT_ADMIN_PORT}"))]
    pub admin_addr: String,
    /// Bearer token for the admin publish endpoint.
    #[arg(long, env = "MT_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// Which channels keep history (as the hubs are configured).
    #[command(flatten)]
    pub history: crate::config::HistoryArgs,
}

/// Why a publish failed. The cause of a wrapped error is its `source`, never repeated in the
/// message: `main` prints the chain (`{:#}`), so each cause appears once.
#[derive(Debug, thiserror::Error)]
pub enum PublishCliError {
    #[error("invalid channel")]
    Channel(#[from] crate::protocol::ChannelNameError),
    #[error("redis publish failed: {}", describe_redis_error(.0))]
    Redis(fred::error::Error),
    #[error("redis publish with history failed")]
    History(#[from] crate::history::HistoryError),
    /// Every bad setting, each named by its environment variable.
    #[error(transparent)]
    Settings(#[from] ConfigErrors),
    #[error("cannot reach the hub's admin endpoint at {addr}")]
    Connect { addr: String, source: std::io::Error },
    #[error("http publish failed")]
    Http(#[from] hyper::Error),
    #[error("the hub refused the publish: {status} {body}{}", hint(*.status))]
    Refused { status: StatusCode, body: String },
    #[error("publish timed out after {0:?}")]
    Timeout(Duration),
}

impl From<fred::error::Error> for PublishCliError {
    fn from(error: fred::error::Error) -> Self {
        Self::Redis(error)
    }
}

/// A Redis client error in words: the client writes an I/O failure's details as Rust debug
/// output (`Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }`); this
/// keeps its message (`IO Error: Connection refused`).
pub fn describe_redis_error(error: &fred::error::Error) -> String {
    let details = error.details();
    if let Some((_, rest)) = details.split_once("InvalidCertificate(") {
        let reason = rest.split(')').next().unwrap_or_default();
        return format!(
            "TLS Error: the server's certificate was refused ({reason}); if a private CA signed it, set MT_REDIS_CA_FILE"
        );
    }
    let message = details
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(message, _)| message)
        .or_else(|| details.split_once("kind: ").map(|(_, rest)| rest.trim_end_matches([' ', '}'])))
        .unwrap_or(details);
    format!("{}: {message}", error.kind().to_str())
}

/// What to do about a refusal, when the status says.
fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => " (give the hub's token with --publish-token or MT_PUBLISH_TOKEN)",
        StatusCode::FORBIDDEN => " (the hub has no MT_PUBLISH_TOKEN: HTTP publishing is off there)",
        _ => "",
    }
}

/// Publishes one event; returns the line to print (with the event's id when history keeps it).
pub async fn run(args: PublishArgs) -> Result<String, PublishCliError> {
    let channel = ChannelName::new(&args.channel)?;
    let policies = crate::config::policies_from(&args.history, "")?;
    let work = async {
        match crate::config::redis_target(&args.redis)? {
            Some(target) => {
                let prefix: ChannelPrefix =
                    ConfigError::parse("MT_CHANNEL_PREFIX", &args.channel_prefix).map_err(ConfigErrors::from)?;
                let config = target.client_config().map_err(|error| {
                    ConfigErrors::from(ConfigError { setting: error.setting(), reason: error.to_string() })
                })?;
                let client = Builder::from_config(config).build()?;
                client.init().await?;
                let key = prefix.redis_channel(&channel);
                // A cluster gets sharded pub/sub: the event goes to the primary owning its slot.
                let sharded = target.layout == Layout::Cluster;
                let line = if policies.keeps_history(&channel) {
                    let payload = Bytes::from(args.data.clone());
                    let id = crate::history::redis::publish(&client, &key, payload, &policies.limits, sharded).await?;
                    format!("published {id}")
                } else if sharded {
                    let receivers: i64 = client.spublish(key, args.data.as_str()).await?;
                    format!("published to redis ({receivers} subscribers on the channel's shard)")
                } else {
                    let receivers: i64 = client.publish(key, args.data.as_str()).await?;
                    format!("published to redis ({receivers} subscribers)")
                };
                let _ = client.quit().await;
                Ok(line)
            }
            None => publish_http(&args.admin_addr, args.publish_token.as_deref(), &channel, args.data.clone()).await,
        }
    };
    tokio::time::timeout(TIMEOUT, work).await.map_err(|_| PublishCliError::Timeout(TIMEOUT))?
}

async fn publish_http(
    addr: &str,
    token: Option<&str>,
    channel: &ChannelName,
    data: String,
) -> Result<String, PublishCliError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| PublishCliError::Connect { addr: addr.to_owned(), source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::post(format!("/publish/{channel}"))
        .header(HOST, addr)
        .body(Full::new(Bytes::from(data)))
        .expect("a request with a valid channel path builds");
    if let Some(token) = token {
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
    }
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status.is_success() {
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    } else {
        Err(PublishCliError::Refused { status, body: String::from_utf8_lossy(&body).trim().to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::error::{Error, ErrorKind};

    /// An I/O failure reads as its message, not as Rust debug output; other errors as they are.
    #[test]
    fn redis_errors_in_words() {
        let refused =
            Error::new(ErrorKind::IO, r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#);
        assert_eq!(describe_redis_error(&refused), "IO Error: Connection refused");
        let timeout = Error::new(ErrorKind::IO, "Kind(TimedOut)");
        assert_eq!(describe_redis_error(&timeout), "IO Error: Kind(TimedOut)");
        let auth = Error::new(ErrorKind::Auth, "WRONGPASS invalid username-password pair");
        assert_eq!(describe_redis_error(&auth), "Authentication Error: WRONGPASS invalid username-password pair");
        let tls = Error::new(ErrorKind::IO, "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }");
        assert_eq!(
            describe_redis_error(&tls),
            "TLS Error: the server's certificate was refused (UnknownIssuer); if a private CA signed it, set MT_REDIS_CA_FILE"
        );
    }
}
