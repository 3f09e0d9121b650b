//! Settings of `mt-stream serve`: declared once as clap flags (each with its environment
//! variable and default), turned once into typed values. No other module reads the environment.
//!
//! A bad value stops start-up with an error naming the setting ([`ConfigError`]).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::policy::{ChannelPatterns, ChannelPolicies, HistoryLimits};
use crate::protocol::ChannelPrefix;
use mt_budget::{Budget, ByteSize};

/// Flags of `mt-stream serve`; every flag is also an environment variable (the flag wins).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Public listener for WebSocket clients.
    #[arg(long, env = "MT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Internal listener: probes, metrics, publish. Never exposed by the ingress.
    #[arg(long, env = "MT_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: String,
    /// Redis to subscribe to (`redis://[:password@]host:port[/db]`); unset = embedded broker.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of the Redis channels (and stream keys) this hub reads.
    #[arg(long, env = "MT_CHANNEL_PREFIX", default_value = "mt:")]
    pub channel_prefix: String,
    /// WebSocket connections per pod; the next upgrade gets 503 with Retry-After.
    #[arg(long, env = "MT_MAX_CONNECTIONS", default_value = "1000")]
    pub max_connections: String,
    /// Memory budget the limits derive from (bytes, or 512Mi, 1Gi); default: cgroup limit, else 1Gi.
    #[arg(long, env = "MT_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Server ping interval in milliseconds (each connection jitters its phase).
    #[arg(long, env = "MT_HEARTBEAT_INTERVAL_MS", default_value = "30000")]
    pub heartbeat_interval_ms: String,
    /// Comma-separated Origin allow-list for upgrades; unset = any origin.
    #[arg(long, env = "MT_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Bearer token for POST /publish/{channel}; unset = publishing over HTTP is refused.
    #[arg(long, env = "MT_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// On SIGTERM, spread client closes over this many seconds.
    #[arg(long, env = "MT_DRAIN_SECONDS", default_value = "20")]
    pub drain_seconds: String,
    /// Log format: text or json.
    #[arg(long, env = "MT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Channel patterns whose slow consumers keep only the newest event instead of being closed.
    #[arg(long, env = "MT_CONFLATE_CHANNELS", default_value = "")]
    pub conflate_channels: String,
    /// Reserved for a GitHub event source; accepted so the chart can pass it.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true, hide = true)]
    pub github_token: Option<String>,
}

/// Which channels keep history and how much: flags of `serve` and of `publish` (which must
/// publish the way the hubs are configured).
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Channel patterns whose events are kept for resume (comma-separated, `*` = any run of
    /// characters); empty = none.
    #[arg(long, env = "MT_HISTORY_CHANNELS", default_value = "*")]
    pub history_channels: String,
    /// Events kept per channel.
    #[arg(long, env = "MT_HISTORY_MAX_EVENTS", default_value = "1000")]
    pub history_max_events: String,
    /// Events older than this many seconds are trimmed from history.
    #[arg(long, env = "MT_HISTORY_MAX_AGE_SECONDS", default_value = "3600")]
    pub history_max_age_seconds: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// The in-process broker: events published to this pod only.
    Embedded,
    /// Redis pub/sub at this URL.
    Redis { url: String },
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
}

/// A setting that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct ConfigError {
    /// The environment variable name (the flag is its lowercase, dashed form).
    pub setting: &'static str,
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl ToString) -> ConfigError {
    ConfigError { setting, reason: reason.to_string() }
}

fn socket_addr(setting: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| invalid(setting, format!("expected host:port such as 0.0.0.0:8080, got {text:?}")))
}

fn positive_integer(setting: &'static str, text: &str) -> Result<u64, ConfigError> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid(setting, format!("expected a positive integer, got {text:?}")))
}

impl Config {
    /// Turns the flags into typed settings; `cgroup_limit` is the memory limit read from the
    /// cgroup, used when `MT_MEMORY_LIMIT` is unset.
    pub fn from_args(args: &ServeArgs, cgroup_limit: Option<ByteSize>) -> Result<Self, ConfigError> {
        let listen = socket_addr("MT_LISTEN", &args.listen)?;
        let admin_listen = socket_addr("MT_ADMIN_LISTEN", &args.admin_listen)?;

        let source = match args.redis_url.as_deref().map(str::trim) {
            None | Some("") => SourceConfig::Embedded,
            Some(url) => {
                if !url.starts_with("redis://") {
                    return Err(invalid(
                        "REDIS_URL",
                        format!("expected redis://[:password@]host:port[/db], got {url:?}"),
                    ));
                }
                fred::types::config::Config::from_url(url).map_err(|e| invalid("REDIS_URL", e))?;
                SourceConfig::Redis { url: url.to_owned() }
            }
        };
        let channel_prefix = ChannelPrefix::new(&args.channel_prefix).map_err(|e| invalid("MT_CHANNEL_PREFIX", e))?;

        let max_connections = positive_integer("MT_MAX_CONNECTIONS", &args.max_connections)?;
        let max_connections =
            NonZeroUsize::new(max_connections as usize).expect("positive_integer returns a non-zero value");
        let memory_limit = match &args.memory_limit {
            Some(text) => text.parse::<ByteSize>().map_err(|e| invalid("MT_MEMORY_LIMIT", e))?,
            None => cgroup_limit.unwrap_or(mt_budget::DEFAULT_MEMORY_LIMIT),
        };
        let heartbeat_interval =
            Duration::from_millis(positive_integer("MT_HEARTBEAT_INTERVAL_MS", &args.heartbeat_interval_ms)?);
        let budget = Budget { max_connections, memory_limit, heartbeat_interval };
        budget.validate().map_err(|e| match e {
            mt_budget::BudgetError::HeartbeatTooShort(_) => invalid("MT_HEARTBEAT_INTERVAL_MS", e),
            mt_budget::BudgetError::TooManyConnections { .. } => invalid("MT_MAX_CONNECTIONS", e),
        })?;

        let allowed_origins = match args.allowed_origins.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(list) => {
                let origins: Vec<String> = list
                    .split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect();
                if let Some(bad) = origins.iter().find(|o| !o.contains("://") && o.as_str() != "null") {
                    return Err(invalid(
                        "MT_ALLOWED_ORIGINS",
                        format!("{bad:?} is not an origin such as https://monkeytown.dev"),
                    ));
                }
                Some(origins)
            }
        };
        let publish_token = match args.publish_token.as_deref() {
            None | Some("") => None,
            Some(token) if token.len() < 16 => {
                return Err(invalid("MT_PUBLISH_TOKEN", "must be at least 16 characters"))
            }
            Some(token) => Some(token.to_owned()),
        };
        let drain_seconds = args.drain_seconds.trim().parse::<u64>().map_err(|_| {
            invalid("MT_DRAIN_SECONDS", format!("expected whole seconds, got {:?}", args.drain_seconds))
        })?;
        let log_format = match args.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("MT_LOG_FORMAT", format!("expected text or json, got {other:?}"))),
        };

        let policies = policies_from(&args.history, &args.conflate_channels)?;

        Ok(Self {
            listen,
            admin_listen,
            source,
            channel_prefix,
            budget,
            allowed_origins,
            publish_token,
            drain: Duration::from_secs(drain_seconds),
            log_format,
            policies,
        })
    }
}

/// The history and conflation settings (shared by `serve` and `publish`).
pub fn policies_from(args: &HistoryArgs, conflate_channels: &str) -> Result<ChannelPolicies, ConfigError> {
    let history = ChannelPatterns::parse(&args.history_channels).map_err(|e| invalid("MT_HISTORY_CHANNELS", e))?;
    let max_events = positive_integer("MT_HISTORY_MAX_EVENTS", &args.history_max_events)?;
    let max_age = Duration::from_secs(positive_integer("MT_HISTORY_MAX_AGE_SECONDS", &args.history_max_age_seconds)?);
    let conflate = ChannelPatterns::parse(conflate_channels).map_err(|e| invalid("MT_CONFLATE_CHANNELS", e))?;
    Ok(ChannelPolicies { history, limits: HistoryLimits { max_events, max_age }, conflate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(flags: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["mt-stream"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        Config::from_args(&cli.serve, None)
    }

    /// The defaults are the ones DESIGN.md lists.
    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.admin_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.budget, Budget::default());
        assert_eq!(config.drain, Duration::from_secs(20));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.channel_prefix.as_str(), "mt:");
        assert_eq!(config.policies, ChannelPolicies::default());
    }

    /// Each bad value is refused with an error naming its setting.
    #[test]
    fn bad_values_name_their_setting() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "nowhere"], "MT_LISTEN"),
            (&["--admin-listen", "1.2.3.4"], "MT_ADMIN_LISTEN"),
            (&["--max-connections", "0"], "MT_MAX_CONNECTIONS"),
            (&["--max-connections", "many"], "MT_MAX_CONNECTIONS"),
            (&["--max-connections", "100000"], "MT_MAX_CONNECTIONS"),
            (&["--memory-limit", "1.5Gi"], "MT_MEMORY_LIMIT"),
            (&["--heartbeat-interval-ms=-5"], "MT_HEARTBEAT_INTERVAL_MS"),
            (&["--heartbeat-interval-ms", "5"], "MT_HEARTBEAT_INTERVAL_MS"),
            (&["--allowed-origins", "monkeytown.dev"], "MT_ALLOWED_ORIGINS"),
            (&["--publish-token", "short"], "MT_PUBLISH_TOKEN"),
            (&["--drain-seconds", "soon"], "MT_DRAIN_SECONDS"),
            (&["--log-format", "xml"], "MT_LOG_FORMAT"),
            (&["--redis-url", "http://example"], "REDIS_URL"),
            (&["--channel-prefix", "bad prefix"], "MT_CHANNEL_PREFIX"),
            (&["--history-channels", "a b"], "MT_HISTORY_CHANNELS"),
            (&["--history-max-events", "0"], "MT_HISTORY_MAX_EVENTS"),
            (&["--history-max-age-seconds", "1h"], "MT_HISTORY_MAX_AGE_SECONDS"),
            (&["--conflate-channels", "prices/*"], "MT_CONFLATE_CHANNELS"),
        ];
        for (flags, setting) in cases {
            let error = parse(flags).expect_err(&format!("{flags:?} must be refused"));
            assert_eq!(error.setting, *setting, "{flags:?}");
            assert!(error.to_string().contains(setting), "{error}");
        }
    }

    /// The memory limit comes from the flag, else the cgroup, else 1 GiB.
    #[test]
    fn memory_limit_precedence() {
        let cli = Cli::try_parse_from(["mt-stream"]).unwrap();
        let from_cgroup = Config::from_args(&cli.serve, Some(ByteSize(512 << 20))).unwrap();
        assert_eq!(from_cgroup.budget.memory_limit, ByteSize(512 << 20));
        let cli = Cli::try_parse_from(["mt-stream", "--memory-limit", "2Gi"]).unwrap();
        let from_flag = Config::from_args(&cli.serve, Some(ByteSize(512 << 20))).unwrap();
        assert_eq!(from_flag.budget.memory_limit, ByteSize(2 << 30));
    }

    /// Origins are split on commas and trailing slashes removed.
    #[test]
    fn origins_are_parsed() {
        let config = parse(&["--allowed-origins", "https://a.dev/, http://localhost:3000"]).unwrap();
        assert_eq!(config.allowed_origins, Some(vec!["https://a.dev".to_owned(), "http://localhost:3000".to_owned()]));
    }
}
