//! The GitHub source's flags (`docs/github.md`) and their parsing into [`GithubSettings`].

use crate::github::settings::{
    ApiUrl, GithubSettings, GithubToken, PollTargets, WebhookSecret, DEFAULT_API_URL, DEFAULT_LEASE,
    DEFAULT_WEBHOOK_SILENCE,
};

use super::values::PositiveSeconds;
use super::Parsing;

/// Flags of the GitHub source (webhooks and polling).
#[derive(Debug, Clone, clap::Args)]
pub struct GithubArgs {
    /// GitHub token the poller sends to the API (unset: unauthenticated, 60 requests per hour).
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// Secret GitHub signs webhook deliveries with (at least 16 bytes); unset = no webhooks.
    #[arg(long, env = "MT_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<String>,
    /// Repositories (`owner/repo`) and organisations to poll, comma-separated; empty = none.
    #[arg(long, env = "MT_GITHUB_REPOS", default_value = "")]
    pub github_repos: String,
    /// Base URL of the GitHub API (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(long, env = "MT_GITHUB_API_URL", default_value = DEFAULT_API_URL)]
    pub github_api_url: String,
    /// A polled repository whose webhook delivered within this many seconds is not polled.
    #[arg(long, env = "MT_GITHUB_WEBHOOK_SILENCE_SECONDS", default_value_t = DEFAULT_WEBHOOK_SILENCE.as_secs().to_string())]
    pub github_webhook_silence_seconds: String,
    /// Seconds the poller's lease in Redis outlives a holder that stopped renewing it.
    #[arg(long, env = "MT_GITHUB_LEASE_SECONDS", default_value_t = DEFAULT_LEASE.as_secs().to_string())]
    pub github_lease_seconds: String,
}

pub(super) fn github(p: &mut Parsing, args: &GithubArgs) -> Option<GithubSettings> {
    let token = p.optional::<GithubToken>("GITHUB_TOKEN", args.github_token.as_deref());
    let webhook_secret = p.optional::<WebhookSecret>("MT_GITHUB_WEBHOOK_SECRET", args.github_webhook_secret.as_deref());
    let poll = p.parse::<PollTargets>("MT_GITHUB_REPOS", &args.github_repos);
    let api_url = p.parse::<ApiUrl>("MT_GITHUB_API_URL", &args.github_api_url);
    let silence = p.parse::<PositiveSeconds>("MT_GITHUB_WEBHOOK_SILENCE_SECONDS", &args.github_webhook_silence_seconds);
    let lease = p.parse::<PositiveSeconds>("MT_GITHUB_LEASE_SECONDS", &args.github_lease_seconds);
    if let Some(PositiveSeconds(lease)) = &lease {
        if lease.as_secs() < 3 {
            p.fail("MT_GITHUB_LEASE_SECONDS", "must be at least 3 (the lease is renewed every third of it)");
            return None;
        }
    }
    Some(GithubSettings {
        token: token?,
        webhook_secret: webhook_secret?,
        poll: poll?.0,
        api_url: api_url?,
        webhook_silence: silence?.0,
        lease: lease?.0,
    })
}
