//! What a GitHub event becomes on the hub's channels: a compact JSON object (the fields a UI
//! shows, never the whole payload, which can be megabytes) and the channels it goes to.
//!
//! Webhook deliveries and the Events API describe the same activity with different envelopes
//! (the event name in the `X-GitHub-Event` header, or a `type` such as `PullRequestEvent` in
//! the JSON); both are read into one [`Payload`] and turned into one [`Activity`], so a client
//! cannot tell which path brought an event except by its `via` field.

use serde::{Deserialize, Serialize};

use super::settings::valid_name;
use crate::protocol::ChannelName;

/// Longest title kept, in characters.
const MAX_TITLE: usize = 256;

/// The parts of an event payload the compact event uses; the rest is skipped unread.
#[derive(Debug, Default, Deserialize)]
pub struct Payload {
    pub action: Option<String>,
    pub repository: Option<Repository>,
    pub sender: Option<User>,
    pub number: Option<u64>,
    pub pull_request: Option<Item>,
    pub issue: Option<Item>,
    pub comment: Option<Item>,
    pub review: Option<Item>,
    pub release: Option<Item>,
    pub workflow_run: Option<Run>,
    pub workflow_job: Option<Run>,
    pub check_run: Option<Run>,
    pub check_suite: Option<Run>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The pushed head: `after` in a webhook, `head` in the Events API.
    pub after: Option<String>,
    pub head: Option<String>,
    pub compare: Option<String>,
    pub head_commit: Option<Commit>,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub login: String,
}

/// A pull request, issue, comment, review or release.
#[derive(Debug, Deserialize)]
pub struct Item {
    pub number: Option<u64>,
    pub id: Option<u64>,
    pub title: Option<String>,
    pub name: Option<String>,
    pub tag_name: Option<String>,
    pub html_url: Option<String>,
    pub state: Option<String>,
    /// Present on an issue that is a pull request.
    pub pull_request: Option<serde::de::IgnoredAny>,
}

/// A workflow run or job, or a check run or suite.
#[derive(Debug, Deserialize)]
pub struct Run {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub conclusion: Option<String>,
    pub head_sha: Option<String>,
    pub head_branch: Option<String>,
    pub html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Commit {
    pub message: Option<String>,
}

/// One event of the Events API (`GET /repos/{owner}/{repo}/events`).
#[derive(Debug, Deserialize)]
pub struct ApiEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub actor: Option<User>,
    pub repo: ApiRepo,
    #[serde(default)]
    pub payload: Payload,
    pub created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ApiRepo {
    pub name: String,
}

impl ApiEvent {
    /// The event id as a number (GitHub's ids are decimal and grow over time).
    pub fn number(&self) -> Option<u64> {
        self.id.parse().ok()
    }
}

/// The event sent to clients (`docs/github.md` documents every field).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Activity {
    /// The webhook event name: `push`, `pull_request`, `issues`, `workflow_run`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `owner/repo`.
    pub repo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The pull request's or issue's number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// A pull request's, issue's or run's state (`open`, `closed`, `completed`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    /// `webhook` or `poll`.
    pub via: &'static str,
    /// The webhook's delivery id, or the Events API's event id.
    pub github_id: String,
    /// When GitHub created the event (polled events; RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// `PullRequestEvent` → `pull_request`: the Events API's type as the webhook's event name.
pub fn webhook_name(api_type: &str) -> String {
    let stem = api_type.strip_suffix("Event").unwrap_or(api_type);
    let mut name = String::with_capacity(stem.len() + 4);
    for (i, c) in stem.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(MAX_TITLE).collect()
}

impl Activity {
    /// The compact event of `payload`, which GitHub named `kind`; `None` when it concerns no
    /// repository (an organisation's membership, an installation).
    pub fn from_payload(
        kind: &str,
        payload: &Payload,
        repo: Option<&str>,
        actor: Option<&str>,
        via: &'static str,
        github_id: &str,
    ) -> Option<Self> {
        let repo = repo.map(str::to_owned).or_else(|| payload.repository.as_ref().map(|r| r.full_name.clone()))?;
        let actor = actor.map(str::to_owned).or_else(|| payload.sender.as_ref().map(|s| s.login.clone()));
        let mut activity = Self {
            kind: kind.to_owned(),
            action: payload.action.clone(),
            repo,
            actor,
            title: None,
            url: None,
            number: payload.number,
            git_ref: None,
            sha: None,
            state: None,
            conclusion: None,
            via,
            github_id: github_id.to_owned(),
            created_at: None,
        };
        // The most specific object names the event: a comment or review on a pull request
        // links to the comment, titled by the pull request.
        let subject = payload.pull_request.as_ref().or(payload.issue.as_ref()).or(payload.release.as_ref());
        if let Some(item) = subject {
            activity.title = item.title.as_deref().or(item.name.as_deref()).or(item.tag_name.as_deref()).map(short);
            activity.url = item.html_url.clone();
            activity.number = item.number.or(activity.number);
            activity.state = item.state.clone();
        }
        if let Some(detail) = payload.comment.as_ref().or(payload.review.as_ref()) {
            activity.url = detail.html_url.clone().or(activity.url);
        }
        if let Some(run) = [&payload.workflow_run, &payload.workflow_job, &payload.check_run, &payload.check_suite]
            .into_iter()
            .find_map(Option::as_ref)
        {
            activity.title = run.name.as_deref().map(short);
            activity.url = run.html_url.clone();
            activity.sha = run.head_sha.clone();
            activity.git_ref = run.head_branch.clone();
            activity.state = run.status.clone();
            activity.conclusion = run.conclusion.clone();
        }
        if kind == "push" {
            activity.git_ref = payload.git_ref.clone();
            activity.sha = payload.after.clone().or_else(|| payload.head.clone());
            activity.url = payload.compare.clone();
            activity.title = payload.head_commit.as_ref().and_then(|c| c.message.as_deref()).map(short);
        }
        if matches!(kind, "create" | "delete") {
            activity.git_ref = payload.git_ref.clone();
        }
        Some(activity)
    }

    /// The compact event of one Events API event.
    pub fn from_api(event: &ApiEvent) -> Option<Self> {
        let kind = webhook_name(&event.kind);
        let mut activity = Self::from_payload(
            &kind,
            &event.payload,
            Some(&event.repo.name),
            event.actor.as_ref().map(|a| a.login.as_str()),
            "poll",
            &event.id,
        )?;
        activity.created_at = event.created_at.clone();
        Some(activity)
    }

    /// The narrower channel's suffix for this kind of event, if it has one.
    pub fn topic(&self) -> Option<&'static str> {
        Some(match self.kind.as_str() {
            "pull_request" | "pull_request_review" | "pull_request_review_comment" | "pull_request_review_thread" => {
                "pulls"
            }
            // A comment on a pull request is an issue comment in GitHub's model.
            "issue_comment" if self.url.as_deref().is_some_and(|u| u.contains("/pull/")) => "pulls",
            "issues" | "issue_comment" => "issues",
            "workflow_run" | "workflow_job" | "check_run" | "check_suite" | "status" | "deployment_status" => "ci",
            "push" => "pushes",
            "release" => "releases",
            _ => return None,
        })
    }

    /// `github:<owner>.<repo>` and, when the kind has one, `github:<owner>.<repo>:<topic>`
    /// (lower case; a name over the channel-name limit gives no channel).
    pub fn channels(&self) -> Vec<ChannelName> {
        let Some((owner, name)) = self.repo.split_once('/') else { return Vec::new() };
        // A name GitHub would not give (a ':' would forge a kind's channel) gets no channel.
        if !valid_name(owner) || !valid_name(name) {
            return Vec::new();
        }
        let base = format!("github:{owner}.{name}").to_ascii_lowercase();
        let mut names = vec![base.clone()];
        if let Some(topic) = self.topic() {
            names.push(format!("{base}:{topic}"));
        }
        names.iter().filter_map(|n| ChannelName::new(n).ok()).collect()
    }

    pub fn to_json(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("an activity serialises").into()
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as GitHub writes it
/// (`2026-11-30T09:27:32Z`, optionally with fractions); `None` for anything else.
pub fn epoch_ms(time: &str) -> Option<u64> {
    let time = time.strip_suffix('Z')?;
    let (date, clock) = time.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let clock = clock.split('.').next()?;
    let mut clock = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (clock.next()??, clock.next()??, clock.next()??);
    let in_range = (1970..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&d)
        && (0..=23).contains(&hh)
        && (0..=59).contains(&mm)
        && (0..=60).contains(&ss);
    if !in_range {
        return None;
    }
    // Days from civil (proleptic Gregorian), after Howard Hinnant's well-known algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_types_become_webhook_names() {
        assert_eq!(webhook_name("PullRequestEvent"), "pull_request");
        assert_eq!(webhook_name("IssuesEvent"), "issues");
        assert_eq!(webhook_name("PullRequestReviewCommentEvent"), "pull_request_review_comment");
        assert_eq!(webhook_name("PushEvent"), "push");
    }

    #[test]
    fn times() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_ms("2026-11-30T09:27:32Z"), Some(1_796_030_852_000));
        assert_eq!(epoch_ms("2000-03-01T00:00:00.5Z"), Some(951_868_800_000));
        assert_eq!(epoch_ms("2026-11-30 09:27:32"), None);
        // Out of range, never an overflow.
        assert_eq!(epoch_ms("9223372036854775807-01-01T00:00:00Z"), None);
        assert_eq!(epoch_ms("2026-11-30T-1:00:00Z"), None);
    }

    /// A pull request from the webhook and the same from the Events API give the same event
    /// (but for `via`, the id and the time), on `github:<owner>.<repo>` and its `:pulls`.
    #[test]
    fn both_paths_agree() {
        let webhook: Payload = serde_json::from_str(
            r#"{"action":"opened","number":7,"repository":{"full_name":"Monkeytown/Web"},"sender":{"login":"ana"},
                "pull_request":{"number":7,"title":"Faster fan-out\nbody","html_url":"https://github.com/Monkeytown/Web/pull/7","state":"open"}}"#,
        )
        .unwrap();
        let from_hook = Activity::from_payload("pull_request", &webhook, None, None, "webhook", "d-1").unwrap();
        let api: ApiEvent = serde_json::from_str(
            r#"{"id":"42","type":"PullRequestEvent","actor":{"login":"ana"},"repo":{"name":"Monkeytown/Web"},
                "created_at":"2026-11-30T09:27:32Z",
                "payload":{"action":"opened","number":7,"pull_request":{"number":7,"title":"Faster fan-out\nbody","html_url":"https://github.com/Monkeytown/Web/pull/7","state":"open"}}}"#,
        )
        .unwrap();
        let from_api = Activity::from_api(&api).unwrap();
        assert_eq!(from_hook.title.as_deref(), Some("Faster fan-out"));
        assert_eq!(
            Activity {
                via: "poll",
                github_id: "42".into(),
                created_at: from_api.created_at.clone(),
                ..from_hook.clone()
            },
            from_api
        );
        let channels: Vec<String> = from_hook.channels().iter().map(|c| c.as_str().to_owned()).collect();
        assert_eq!(channels, ["github:monkeytown.web", "github:monkeytown.web:pulls"]);
        let forged = Activity { repo: "a:pulls/b".into(), ..from_hook };
        assert!(forged.channels().is_empty(), "a name outside GitHub's characters gets no channel");
    }
}
