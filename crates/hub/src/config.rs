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
    /// Internal listener (ip:port): probes, metrics, publish. Never exposed by the ingress.
    #[arg(long, env = "MT_ADMIN_LISTEN", default_value_t = format!("0.0.0.0:{DEFAULT_ADMIN_PORT}"))]
    pub admin_listen: String,
    /// Redis to subscribe to (`redis://[:password@]host:port[/db]`); unset or empty = embedded broker.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
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
    /// Channel patterns whose slow consumers keep only the newest event instead of being closed
    /// (comma-separated, `*` = any run of characters); empty = none.
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct ConfigError {
    /// The environment variable name (the flag is its lowercase, dashed form).
    pub setting: &'static str,
    pub reason: String,
}

impl ConfigError {
    /// Parses the raw value of one setting into its type; the error names the setting.
    pub fn parse<T>(setting: &'static str, raw: &str) -> Result<T, Self>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        raw.parse().map_err(|reason: T::Err| Self { setting, reason: reason.to_string() })
    }
}

/// Every setting that cannot be used (at least one), in the order the settings are declared.
/// Displayed as `invalid SETTING: reason` for one, else `invalid settings:` and one indented
/// `SETTING: reason` line per bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The names of the bad settings.
    pub fn settings(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|error| error.setting)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => fmt::Display::fmt(one, f),
            many => {
                f.write_str("invalid settings:")?;
                for error in many {
                    write!(f, "\n  {}: {}", error.setting, error.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

/// Why a value did not parse: `expected <what>, got "<value>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {what}, got {got:?}")]
pub struct Expected {
    pub what: &'static str,
    pub got: String,
}

impl Expected {
    fn new(what: &'static str, got: &str) -> Self {
        Self { what, got: got.to_owned() }
    }
}

/// A positive integer of type `T` (`NonZeroUsize`, `NonZeroU64`); surrounding spaces ignored.
struct Positive<T>(T);

impl<T: FromStr> FromStr for Positive<T> {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim().parse().map(Positive).map_err(|_| Expected::new("a positive integer", text))
    }
}

/// A positive number of milliseconds.
struct Millis(Duration);

impl FromStr for Millis {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Positive(ms) = text.parse::<Positive<NonZeroU64>>()?;
        Ok(Self(Duration::from_millis(ms.get())))
    }
}

/// A positive number of seconds.
struct PositiveSeconds(Duration);

impl FromStr for PositiveSeconds {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Positive(secs) = text.parse::<Positive<NonZeroU64>>()?;
        Ok(Self(Duration::from_secs(secs.get())))
    }
}

/// A number of whole seconds, zero included.
struct WholeSeconds(Duration);

impl FromStr for WholeSeconds {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let secs = text.trim().parse::<u64>().map_err(|_| Expected::new("whole seconds", text))?;
        Ok(Self(Duration::from_secs(secs)))
    }
}

/// An `ip:port` to listen on (a host name is not accepted; spaces are not trimmed).
struct ListenAddr(SocketAddr);

impl FromStr for ListenAddr {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self).map_err(|_| Expected::new("host:port such as 0.0.0.0:8080", text))
    }
}

/// A comma-separated Origin allow-list; trailing `/` removed, `null` allowed.
struct Origins(Vec<String>);

impl FromStr for Origins {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let origins: Vec<String> = list
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        match origins.iter().find(|origin| !origin.contains("://") && origin.as_str() != "null") {
            Some(bad) => Err(format!("{bad:?} is not an origin such as https://monkeytown.dev")),
            None => Ok(Self(origins)),
        }
    }
}

/// The bearer token of `POST /publish`: at least [`MIN_PUBLISH_TOKEN`] bytes, taken as given.
struct PublishToken(String);

impl FromStr for PublishToken {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.len() < MIN_PUBLISH_TOKEN {
            return Err(format!("must be at least {MIN_PUBLISH_TOKEN} characters"));
        }
        Ok(Self(token.to_owned()))
    }
}

/// A `redis://` URL the Redis client accepts; surrounding spaces ignored.
struct RedisUrl(String);

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let url = text.trim();
        if !url.starts_with("redis://") {
            return Err(Expected::new("redis://[:password@]host:port[/db]", url).to_string());
        }
        fred::types::config::Config::from_url(url)
            // Not echoed: past the scheme check the URL may hold a password.
            .map_err(|e| format!("not a Redis URL the client accepts ({})", e.details()))?;
        Ok(Self(url.to_owned()))
    }
}

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
        let redis_url = p.optional::<RedisUrl>("REDIS_URL", args.redis_url.as_deref());
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

        p.finish(|| {
            Some(Self {
                listen: listen?.0,
                admin_listen: admin_listen?.0,
                source: match redis_url? {
                    None => SourceConfig::Embedded,
                    Some(RedisUrl(url)) => SourceConfig::Redis { url },
                },
                channel_prefix: channel_prefix?,
                budget: budget?,
                allowed_origins: allowed_origins?.map(|Origins(list)| list),
                publish_token: publish_token?.map(|PublishToken(token)| token),
                drain: drain?.0,
                log_format: log_format?,
                policies: policies?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(flags: &[&str]) -> Result<Config, ConfigErrors> {
        let mut argv = vec!["mt-stream"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        Config::from_args(&cli.serve, None)
    }

    /// The defaults are the ones docs/configuration.md lists.
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

    /// `--help` prints the defaults `Config` applies, taken from the typed defaults.
    #[test]
    fn help_shows_the_typed_defaults() {
        let help = Cli::command().render_long_help().to_string();
        // The help of one flag: its block, up to the empty line before the next flag.
        let help_of = |flag: &str| {
            let start = help.find(&format!("--{flag} <")).unwrap_or_else(|| panic!("--{flag} in {help}"));
            let rest = &help[start..];
            rest[..rest.find("\n\n").unwrap_or(rest.len())].to_owned()
        };
        let budget = Budget::default();
        let limits = HistoryLimits::default();
        for (flag, default) in [
            ("max-connections", budget.max_connections.to_string()),
            ("heartbeat-interval-ms", budget.heartbeat_interval.as_millis().to_string()),
            ("history-max-events", limits.max_events.to_string()),
            ("history-max-age-seconds", limits.max_age.as_secs().to_string()),
            ("history-channels", DEFAULT_HISTORY_CHANNELS.to_owned()),
            ("channel-prefix", DEFAULT_CHANNEL_PREFIX.to_owned()),
        ] {
            let text = help_of(flag);
            assert!(text.contains(&format!("[default: {default}]")), "--{flag}: {text}");
        }
        let memory = help_of("memory-limit");
        assert!(memory.contains(&format!("else {}", mt_budget::DEFAULT_MEMORY_LIMIT)), "{memory}");
        assert!(!memory.contains("[default:"), "the memory limit's default is the cgroup's: {memory}");
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
            assert_eq!(error.settings().collect::<Vec<_>>(), [*setting], "{flags:?}");
            assert!(error.to_string().starts_with(&format!("invalid {setting}: ")), "{error}");
        }
    }

    /// One bad setting keeps the one-line form, with the reason of its type.
    #[test]
    fn one_bad_setting_is_one_line() {
        let error = parse(&["--listen", "nowhere"]).unwrap_err();
        assert_eq!(error.to_string(), r#"invalid MT_LISTEN: expected host:port such as 0.0.0.0:8080, got "nowhere""#);
    }

    /// Several bad settings are all reported in one error, one line each, in declaration order.
    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let error = parse(&[
            "--log-format",
            "xml",
            "--listen",
            "nowhere",
            "--max-connections",
            "0",
            "--redis-url",
            "http://example",
            "--publish-token",
            "short",
            "--history-max-events",
            "0",
            "--conflate-channels",
            "prices/*",
        ])
        .expect_err("all of them are bad");
        let expected = [
            "MT_LISTEN",
            "REDIS_URL",
            "MT_MAX_CONNECTIONS",
            "MT_PUBLISH_TOKEN",
            "MT_LOG_FORMAT",
            "MT_HISTORY_MAX_EVENTS",
            "MT_CONFLATE_CHANNELS",
        ];
        assert_eq!(error.settings().collect::<Vec<_>>(), expected);
        let message = error.to_string();
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some("invalid settings:"));
        for (line, setting) in lines.zip(expected) {
            assert!(line.starts_with(&format!("  {setting}: ")), "{line}");
        }
        assert_eq!(message.lines().count(), 1 + expected.len(), "{message}");
        assert!(message.contains(r#"  MT_LOG_FORMAT: expected text or json, got "xml""#), "{message}");
    }

    /// The budget check runs beside other failures when its inputs parsed, and is skipped
    /// (not reported wrongly) when one of them did not.
    #[test]
    fn cross_setting_checks_need_their_inputs() {
        let both = parse(&["--max-connections", "100000", "--log-format", "xml"]).unwrap_err();
        assert_eq!(both.settings().collect::<Vec<_>>(), ["MT_MAX_CONNECTIONS", "MT_LOG_FORMAT"]);
        assert!(both.to_string().contains("100000 connections need"), "{both}");
        let skipped = parse(&["--max-connections", "100000", "--memory-limit", "lots"]).unwrap_err();
        assert_eq!(skipped.settings().collect::<Vec<_>>(), ["MT_MEMORY_LIMIT"]);
    }

    /// `publish` gets every bad history setting too.
    #[test]
    fn policies_report_every_bad_setting() {
        let args = HistoryArgs {
            history_channels: "a b".to_owned(),
            history_max_events: "0".to_owned(),
            history_max_age_seconds: "60".to_owned(),
        };
        let error = policies_from(&args, "").unwrap_err();
        assert_eq!(error.settings().collect::<Vec<_>>(), ["MT_HISTORY_CHANNELS", "MT_HISTORY_MAX_EVENTS"]);
    }

    /// Unset, empty and blank mean none where the documentation says so.
    #[test]
    fn empty_means_none() {
        let config = parse(&["--redis-url", " ", "--allowed-origins", "", "--publish-token", ""]).unwrap();
        assert_eq!(config.source, SourceConfig::Embedded);
        assert_eq!(config.allowed_origins, None);
        assert_eq!(config.publish_token, None);
        let error = parse(&["--memory-limit", ""]).unwrap_err();
        assert_eq!(error.settings().collect::<Vec<_>>(), ["MT_MEMORY_LIMIT"]);
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
