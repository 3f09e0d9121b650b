//! The settings of `serve`: defaults, every bad value named, all reported at once.

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
    // The admin port is loopback unless configured (the image and the chart open it).
    assert_eq!(config.admin_listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(config.budget, Budget::default());
    assert_eq!(config.drain, Duration::from_secs(20));
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.channel_prefix.as_str(), "mt:");
    assert_eq!(config.policies, ChannelPolicies::default());
    // No GitHub source unless a webhook secret or repositories are given.
    assert!(!config.github.enabled());
    assert_eq!(config.github.api_url.as_str(), "https://api.github.com");
    assert_eq!(config.github.lease, Duration::from_secs(15));
    assert_eq!(config.github.webhook_silence, Duration::from_secs(900));
}

/// A token's value never appears in a setting's error.
#[test]
fn a_bad_token_is_not_echoed() {
    let error = parse(&["--github-token", "ghp_secret value"]).unwrap_err().to_string();
    assert!(error.starts_with("invalid GITHUB_TOKEN: ") && !error.contains("ghp_secret"), "{error}");
    let error = parse(&["--github-webhook-secret", "tiny-secret"]).unwrap_err().to_string();
    assert!(!error.contains("tiny-secret"), "{error}");
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
        (&["--github-repos", "monkeytown/web/extra"], "MT_GITHUB_REPOS"),
        (&["--github-api-url", "api.github.com"], "MT_GITHUB_API_URL"),
        (&["--github-webhook-secret", "short"], "MT_GITHUB_WEBHOOK_SECRET"),
        (&["--github-token", "ghp_a b"], "GITHUB_TOKEN"),
        (&["--github-webhook-silence-seconds", "0"], "MT_GITHUB_WEBHOOK_SILENCE_SECONDS"),
        (&["--github-lease-seconds", "2"], "MT_GITHUB_LEASE_SECONDS"),
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
