//! Settings of `mt-stream serve` (and the history settings `mt-stream publish` shares): declared
//! once as clap flags (each with its environment variable and default), turned once into typed
//! values. No other module reads the environment.
//!
//! # One parsing idiom
//!
//! Every setting has a type implementing [`FromStr`] whose error is a lower-case reason saying
//! what was expected and what was given: the hub's own types ([`ChannelPrefix`],
//! [`ChannelPatterns`], [`LogFormat`]), [`mt_budget::ByteSize`], and small private newtypes
//! here (a positive integer, milliseconds, seconds, a listen address, origins, the publish
//! token, the Redis URL). [`Config::from_args`] hands each raw value to one generic helper
//! (`Parsing::parse`, or `Parsing::optional` where empty means none), which records a
//! [`ConfigError`] naming the environment variable and carries on with the next setting.
//! Cross-setting checks ([`Budget::validate`]) run when all their inputs parsed. The result is
//! the [`Config`], or [`ConfigErrors`] holding every bad setting, so an operator fixes them all
//! in one restart.
//!
//! The clap fields stay raw strings on purpose: clap's typed `value_parser` stops at the first
//! value that does not parse and names the flag (`--max-connections`), not the environment
//! variable a pod is configured with, and clap has no mode that collects value errors
//! (`ignore_errors` silently falls back to the default instead). So clap only finds the raw
//! value (flag, else variable, else default) and this module does all the parsing.
//!
//! # Defaults written once
//!
//! Each default is written in one place: the clap `default_value`, or a `DEFAULT_*` constant
//! that both the clap attribute (`default_value_t`) and the typed default use
//! ([`mt_budget::DEFAULT_MAX_CONNECTIONS`], [`mt_budget::DEFAULT_HEARTBEAT_INTERVAL`], the
//! history defaults of [`crate::policy`]). `mt-stream serve --help` prints them.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use crate::auth::{AuthSettings, Grants, HmacSecret, PublicKeysFile};
use crate::policy::{
    ChannelPatterns, ChannelPolicies, HistoryLimits, DEFAULT_HISTORY_CHANNELS, DEFAULT_HISTORY_MAX_AGE,
    DEFAULT_HISTORY_MAX_EVENTS,
};
use crate::protocol::ChannelPrefix;
use mt_budget::{Budget, BudgetError, ByteSize, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_CONNECTIONS};

/// Default of `MT_CHANNEL_PREFIX` (`serve` and `publish`).
pub const DEFAULT_CHANNEL_PREFIX: &str = "mt:";
/// Port of the default admin listener (`serve`), which `publish` targets by default.
pub const DEFAULT_ADMIN_PORT: u16 = 9090;
/// Shortest accepted `MT_PUBLISH_TOKEN`, in bytes.
const MIN_PUBLISH_TOKEN: usize = 16;

/// Flags of `mt-stream serve`; every flag is also an environment variable (the flag wins).
/// Raw strings: [`Config::from_args`] parses them (see the module documentation).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Public listener for WebSocket clients (ip:port).
    #[arg(long, env = "MT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Internal listener (ip:port): probes, metrics, publish. Loopback unless set: the image
    /// and the chart set 0.0.0.0, where the kubelet and Prometheus must reach it.
    #[arg(long, env = "MT_ADMIN_LISTEN", default_value_t = format!("127.0.0.1:{DEFAULT_ADMIN_PORT}"))]
    pub admin_listen: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Prefix of the Redis channels (and stream keys) this hub reads.
    #[arg(long, env = "MT_CHANNEL_PREFIX", default_value = DEFAULT_CHANNEL_PREFIX)]
    pub channel_prefix: String,
    /// WebSocket connections per pod; the next upgrade gets 503 with Retry-After.
    #[arg(long, env = "MT_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS.to_string())]
    pub max_connections: String,
    /// Memory budget the limits derive from (bytes, or 512Mi, 1Gi); default: cgroup limit, else 1Gi.
    #[arg(long, env = "MT_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Server ping interval in milliseconds (each connection jitters its phase).
    #[arg(long, env = "MT_HEARTBEAT_INTERVAL_MS", default_value_t = DEFAULT_HEARTBEAT_INTERVAL.as_millis().to_string())]
    pub heartbeat_interval_ms: String,
    /// Comma-separated Origin allow-list for upgrades; unset or empty = any origin.
    #[arg(long, env = "MT_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Bearer token (at least 16 bytes) for POST /publish/{channel}; unset or empty = publishing
    /// over HTTP is refused.
    #[arg(long, env = "MT_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// On SIGTERM, spread client closes over this many seconds (0 = all at once).
    #[arg(long, env = "MT_DRAIN_SECONDS", default_value = "20")]
    pub drain_seconds: String,
    /// Log format: text or json.
    #[arg(long, env = "MT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Channel patterns whose slow consumers keep only the newest event instead of being closed
    /// (comma-separated, `*` = any run of characters); empty = none.
    #[arg(long, env = "MT_CONFLATE_CHANNELS", default_value = "")]
    pub conflate_channels: String,
    #[command(flatten)]
    pub github: GithubArgs,
}

/// Who may read which channel (`docs/tokens.md`): with no key set, every channel is public.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Channel patterns readable without a grant (exact names, or prefixes ending in `*`,
    /// comma-separated); only meaningful once a key is set.
    #[arg(long, env = "MT_PUBLIC_CHANNELS", default_value = "")]
    pub public_channels: String,
    /// HMAC secret (at least 32 bytes) that verifies HS256 connection tokens.
    #[arg(long, env = "MT_AUTH_HMAC_SECRET", hide_env_values = true)]
    pub auth_hmac_secret: Option<String>,
    /// JWKS file of public keys (RS256, ES256, EdDSA; each with a `kid`) that verify tokens.
    #[arg(long, env = "MT_AUTH_PUBLIC_KEYS_FILE")]
    pub auth_public_keys_file: Option<String>,
    /// Audience (`aud`) a token must name.
    #[arg(long, env = "MT_AUTH_AUDIENCE", default_value = crate::auth::DEFAULT_AUDIENCE)]
    pub auth_audience: String,
    /// Seconds between reads of the public keys file (keys rotate without a restart).
    #[arg(long, env = "MT_AUTH_KEYS_RELOAD_SECONDS", default_value = "30")]
    pub auth_keys_reload_seconds: String,
}

/// Where Redis is (`docs/scaling.md`): flags of `serve` and of `publish`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RedisArgs {
    /// Redis to use: `redis://` or `rediss://` (TLS) host:port, `redis-sentinel://` sentinels
    /// with `?sentinelServiceName=`, `redis-cluster://` seed nodes (`?node=host:port&…`);
    /// unset or empty = embedded broker.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis ACL user, when the URL names none.
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password, when the URL holds none.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// PEM file of the CA certificates to trust for TLS (default: the system's).
    #[arg(long, env = "MT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<String>,
}

/// The Redis target (`None`: no `REDIS_URL`, the embedded broker), or the bad setting.
pub fn redis_target(args: &RedisArgs) -> Result<Option<RedisTarget>, ConfigErrors> {
    let mut p = Parsing::default();
    let target = redis(&mut p, args);
    p.finish(|| target)
}

fn redis(p: &mut Parsing, args: &RedisArgs) -> Option<Option<RedisTarget>> {
    let nonblank =
        |value: &Option<String>| value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let Some(url) = nonblank(&args.redis_url) else {
        if nonblank(&args.redis_ca_file).is_some() {
            p.fail("MT_REDIS_CA_FILE", "set, but REDIS_URL is not");
            return None;
        }
        return Some(None);
    };
    let ca_file = nonblank(&args.redis_ca_file).map(std::path::PathBuf::from);
    match RedisTarget::new(&url, nonblank(&args.redis_username), args.redis_password.clone(), ca_file) {
        Ok(target) => Some(Some(target)),
        Err(error) => {
            p.fail(error.setting(), &error);
            None
        }
    }
}

/// Which channels keep history and how much: flags of `serve` and of `publish` (which must
/// publish the way the hubs are configured).
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Channel patterns whose events are kept for resume (comma-separated, `*` = any run of
    /// characters); empty = none.
    #[arg(long, env = "MT_HISTORY_CHANNELS", default_value = DEFAULT_HISTORY_CHANNELS)]
    pub history_channels: String,
    /// Events kept per channel.
    #[arg(long, env = "MT_HISTORY_MAX_EVENTS", default_value_t = DEFAULT_HISTORY_MAX_EVENTS.to_string())]
    pub history_max_events: String,
    /// Events older than this many seconds are trimmed from history.
    #[arg(long, env = "MT_HISTORY_MAX_AGE_SECONDS", default_value_t = DEFAULT_HISTORY_MAX_AGE.as_secs().to_string())]
    pub history_max_age_seconds: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(Expected::new("text or json", other)),
        }
    }
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// The in-process broker: events published to this pod only.
    Embedded,
    /// Redis: one server, Sentinel or Cluster.
    Redis(RedisTarget),
}

/// The typed settings of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub source: SourceConfig,
    pub channel_prefix: ChannelPrefix,
    pub budget: Budget,
    /// `None` = any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// `None` = HTTP publishing refused.
    pub publish_token: Option<String>,
    pub drain: Duration,
    pub log_format: LogFormat,
    pub policies: ChannelPolicies,
    pub auth: AuthSettings,
    pub github: GithubSettings,
}

mod error;
mod github;
#[cfg(test)]
mod tests;
mod values;

use crate::github::settings::GithubSettings;
use crate::source::redis::RedisTarget;
pub use error::{ConfigError, ConfigErrors, Expected};
pub use github::GithubArgs;
use values::{ListenAddr, Millis, Origins, Positive, PositiveSeconds, PublishToken, WholeSeconds};

/// The one parsing helper: parses each raw value into its type and records every failure, so
/// one bad setting never hides the next.
#[derive(Default)]
struct Parsing {
    errors: Vec<ConfigError>,
}

impl Parsing {
    /// `raw` as a `T`, or `None` with the failure recorded against `setting`.
    fn parse<T>(&mut self, setting: &'static str, raw: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        ConfigError::parse(setting, raw).map_err(|error| self.errors.push(error)).ok()
    }

    /// As [`Parsing::parse`] for a setting where unset, empty or blank means none:
    /// `Some(None)` then.
    fn optional<T>(&mut self, setting: &'static str, raw: Option<&str>) -> Option<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match raw {
            Some(raw) if !raw.trim().is_empty() => self.parse(setting, raw).map(Some),
            _ => Some(None),
        }
    }

    /// Records the failure of a cross-setting check.
    fn fail(&mut self, setting: &'static str, reason: impl fmt::Display) {
        self.errors.push(ConfigError { setting, reason: reason.to_string() });
    }

    /// Every recorded failure, else the value `build` assembles from the parsed settings
    /// (`None` from it only when a setting failed, which recorded an error).
    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ConfigErrors> {
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        Ok(build().expect("every setting parsed, since none failed"))
    }
}

impl Config {
    /// Turns the flags into typed settings, or reports every bad one; `cgroup_limit` is the
    /// memory limit read from the cgroup, used when `MT_MEMORY_LIMIT` is unset.
    pub fn from_args(args: &ServeArgs, cgroup_limit: Option<ByteSize>) -> Result<Self, ConfigErrors> {
        let mut p = Parsing::default();
        let listen = p.parse::<ListenAddr>("MT_LISTEN", &args.listen);
        let admin_listen = p.parse::<ListenAddr>("MT_ADMIN_LISTEN", &args.admin_listen);
        let redis_target = redis(&mut p, &args.redis);
        let channel_prefix = p.parse::<ChannelPrefix>("MT_CHANNEL_PREFIX", &args.channel_prefix);
        let max_connections = p.parse::<Positive<NonZeroUsize>>("MT_MAX_CONNECTIONS", &args.max_connections);
        let memory_limit = match &args.memory_limit {
            Some(raw) => p.parse::<ByteSize>("MT_MEMORY_LIMIT", raw),
            None => Some(cgroup_limit.unwrap_or(mt_budget::DEFAULT_MEMORY_LIMIT)),
        };
        let heartbeat = p.parse::<Millis>("MT_HEARTBEAT_INTERVAL_MS", &args.heartbeat_interval_ms);
        let budget = match (max_connections, memory_limit, heartbeat) {
            (Some(Positive(max_connections)), Some(memory_limit), Some(Millis(heartbeat_interval))) => {
                let budget = Budget { max_connections, memory_limit, heartbeat_interval };
                match budget.validate() {
                    Ok(()) => Some(budget),
                    Err(e) => {
                        let setting = match e {
                            BudgetError::HeartbeatTooShort(_) => "MT_HEARTBEAT_INTERVAL_MS",
                            BudgetError::TooManyConnections { .. } => "MT_MAX_CONNECTIONS",
                        };
                        p.fail(setting, e);
                        None
                    }
                }
            }
            _ => None,
        };
        let allowed_origins = p.optional::<Origins>("MT_ALLOWED_ORIGINS", args.allowed_origins.as_deref());
        let publish_token = p.optional::<PublishToken>("MT_PUBLISH_TOKEN", args.publish_token.as_deref());
        let drain = p.parse::<WholeSeconds>("MT_DRAIN_SECONDS", &args.drain_seconds);
        let log_format = p.parse::<LogFormat>("MT_LOG_FORMAT", &args.log_format);
        let policies = policies(&mut p, &args.history, &args.conflate_channels);
        let auth = auth(&mut p, &args.auth);
        let github = github::github(&mut p, &args.github);

        p.finish(|| {
            Some(Self {
                listen: listen?.0,
                admin_listen: admin_listen?.0,
                source: match redis_target? {
                    None => SourceConfig::Embedded,
                    Some(target) => SourceConfig::Redis(target),
                },
                channel_prefix: channel_prefix?,
                budget: budget?,
                allowed_origins: allowed_origins?.map(|Origins(list)| list),
                publish_token: publish_token?.map(|PublishToken(token)| token),
                drain: drain?.0,
                log_format: log_format?,
                policies: policies?,
                auth: auth?,
                github: github?,
            })
        })
    }
}

/// The history and conflation settings (shared by `serve` and `publish`), or every bad one.
pub fn policies_from(args: &HistoryArgs, conflate_channels: &str) -> Result<ChannelPolicies, ConfigErrors> {
    let mut p = Parsing::default();
    let policies = policies(&mut p, args, conflate_channels);
    p.finish(|| policies)
}

fn policies(p: &mut Parsing, args: &HistoryArgs, conflate_channels: &str) -> Option<ChannelPolicies> {
    let history = p.parse::<ChannelPatterns>("MT_HISTORY_CHANNELS", &args.history_channels);
    let max_events = p.parse::<Positive<NonZeroU64>>("MT_HISTORY_MAX_EVENTS", &args.history_max_events);
    let max_age = p.parse::<PositiveSeconds>("MT_HISTORY_MAX_AGE_SECONDS", &args.history_max_age_seconds);
    let conflate = p.parse::<ChannelPatterns>("MT_CONFLATE_CHANNELS", conflate_channels);
    Some(ChannelPolicies {
        history: history?,
        limits: HistoryLimits { max_events: max_events?.0.get(), max_age: max_age?.0 },
        conflate: conflate?,
    })
}

fn auth(p: &mut Parsing, args: &AuthArgs) -> Option<AuthSettings> {
    let public_channels = p.parse::<Grants>("MT_PUBLIC_CHANNELS", &args.public_channels);
    let hmac_secret = p.optional::<HmacSecret>("MT_AUTH_HMAC_SECRET", args.auth_hmac_secret.as_deref());
    let public_keys = p.optional::<PublicKeysFile>("MT_AUTH_PUBLIC_KEYS_FILE", args.auth_public_keys_file.as_deref());
    let audience = match args.auth_audience.trim() {
        "" => {
            p.fail("MT_AUTH_AUDIENCE", "must not be empty");
            None
        }
        audience => Some(audience.to_owned()),
    };
    let reload = p.parse::<PositiveSeconds>("MT_AUTH_KEYS_RELOAD_SECONDS", &args.auth_keys_reload_seconds);
    Some(AuthSettings {
        hmac_secret: hmac_secret?,
        public_keys: public_keys?,
        audience: audience?,
        reload_interval: reload?.0,
        public_channels: public_channels?,
    })
}
