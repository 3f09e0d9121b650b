//! Per-channel policies chosen by channel-name patterns: which channels keep a history
//! (`MT_HISTORY_CHANNELS`) and which conflate their slow consumers instead of closing them
//! (`MT_CONFLATE_CHANNELS`), plus the history's limits.
//!
//! A pattern is a channel name in which `*` matches any run of characters (`agent.*`, `*`).

use std::time::Duration;

use crate::protocol::ChannelName;

/// Default of `MT_HISTORY_CHANNELS`: every channel keeps history.
pub const DEFAULT_HISTORY_CHANNELS: &str = "*";
/// Default of `MT_HISTORY_MAX_EVENTS`.
pub const DEFAULT_HISTORY_MAX_EVENTS: u64 = 1000;
/// Default of `MT_HISTORY_MAX_AGE_SECONDS`: one hour.
pub const DEFAULT_HISTORY_MAX_AGE: Duration = Duration::from_secs(3600);

/// A comma-separated list of channel patterns; empty matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelPatterns(Vec<String>);

/// Why a pattern list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a channel pattern: use [A-Za-z0-9_.:-] and * (any run of characters)")]
pub struct BadPattern(pub String);

impl ChannelPatterns {
    pub fn parse(list: &str) -> Result<Self, BadPattern> {
        let mut patterns = Vec::new();
        for pattern in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let valid = pattern.len() <= crate::protocol::MAX_CHANNEL_NAME
                && pattern.bytes().all(|b| b == b'*' || ChannelName::is_name_byte(b));
            if !valid {
                return Err(BadPattern(pattern.chars().take(64).collect()));
            }
            patterns.push(pattern.to_owned());
        }
        Ok(Self(patterns))
    }

    /// Every channel.
    pub fn all() -> Self {
        Self(vec!["*".to_owned()])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, channel: &ChannelName) -> bool {
        self.0.iter().any(|pattern| glob_match(pattern.as_bytes(), channel.as_str().as_bytes()))
    }
}

impl std::str::FromStr for ChannelPatterns {
    type Err = BadPattern;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Self::parse(list)
    }
}

/// `*`-only glob, iterative with one backtrack point (linear in practice, no recursion).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// How much history each kept channel holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept per channel (`MT_HISTORY_MAX_EVENTS`).
    pub max_events: u64,
    /// Events older than this are trimmed; an idle channel's stream expires (`MT_HISTORY_MAX_AGE_SECONDS`).
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { max_events: DEFAULT_HISTORY_MAX_EVENTS, max_age: DEFAULT_HISTORY_MAX_AGE }
    }
}

/// Everything per channel that the settings decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPolicies {
    pub history: ChannelPatterns,
    pub limits: HistoryLimits,
    pub conflate: ChannelPatterns,
}

impl Default for ChannelPolicies {
    fn default() -> Self {
        Self {
            history: ChannelPatterns::parse(DEFAULT_HISTORY_CHANNELS).expect("the default history patterns parse"),
            limits: HistoryLimits::default(),
            conflate: ChannelPatterns::default(),
        }
    }
}

impl ChannelPolicies {
    pub fn keeps_history(&self, channel: &ChannelName) -> bool {
        self.history.matches(channel)
    }

    pub fn conflates(&self, channel: &ChannelName) -> bool {
        self.conflate.matches(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    /// `*` matches any run of characters, anywhere; lists are comma-separated.
    #[test]
    fn patterns_match() {
        let patterns = ChannelPatterns::parse("builds, agent.*,*.state,a*b*c").unwrap();
        for yes in ["builds", "agent.", "agent.7", "room.state", "abc", "a-b-c", "aXbYbZc"] {
            assert!(patterns.matches(&name(yes)), "{yes}");
        }
        for no in ["build", "buildsx", "agent", "state", "ab", "a-b-c-d"] {
            assert!(!patterns.matches(&name(no)), "{no}");
        }
        assert!(ChannelPatterns::all().matches(&name("anything")));
        assert!(!ChannelPatterns::parse("").unwrap().matches(&name("x")));
        assert!(ChannelPatterns::parse("a b").is_err());
        assert!(ChannelPatterns::parse("a/*").is_err());
    }
}
