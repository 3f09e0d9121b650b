//! Channel grants: the patterns of a token's `channels` claim and of `MT_PUBLIC_CHANNELS`.
//!
//! A pattern is an exact channel name (`builds`) or a prefix ending in `*` (`user:42:*`, which
//! matches every channel whose name starts with `user:42:`, and so neither `user:42` nor
//! `user:420`). `*` alone matches every channel. No other wildcard exists: a grant is read by
//! people deciding who may see what, so it means exactly what it says.

use std::fmt;

use crate::protocol::{ChannelName, MAX_CHANNEL_NAME};

/// One grant pattern.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// This channel only.
    Exact(ChannelName),
    /// Every channel whose name starts with this (possibly empty) prefix.
    Prefix(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a channel grant: use a channel name ([A-Za-z0-9_.:-], at most 128 bytes) or a prefix ending in *"
)]
pub struct BadGrant(pub String);

impl Grant {
    pub fn parse(pattern: &str) -> Result<Self, BadGrant> {
        let refuse = || BadGrant(pattern.chars().take(64).collect());
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                let valid = prefix.len() < MAX_CHANNEL_NAME && prefix.bytes().all(ChannelName::is_name_byte);
                valid.then(|| Self::Prefix(prefix.to_owned())).ok_or_else(refuse)
            }
            None => ChannelName::new(pattern).map(Self::Exact).map_err(|_| refuse()),
        }
    }

    pub fn matches(&self, channel: &ChannelName) -> bool {
        match self {
            Self::Exact(name) => name == channel,
            Self::Prefix(prefix) => channel.as_str().starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => write!(f, "{name}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A list of grants; empty grants nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants(Vec<Grant>);

impl Grants {
    /// Parses each pattern; the first bad one is the error.
    pub fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, BadGrant> {
        patterns.into_iter().map(Grant::parse).collect::<Result<Vec<_>, _>>().map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.0.iter()
    }

    pub fn allows(&self, channel: &ChannelName) -> bool {
        self.0.iter().any(|grant| grant.matches(channel))
    }
}

impl std::str::FromStr for Grants {
    type Err = BadGrant;

    /// A comma-separated list (`MT_PUBLIC_CHANNELS`); blanks between commas are skipped.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Self::from_patterns(list.split(',').map(str::trim).filter(|p| !p.is_empty()))
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, grant) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{grant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    /// A prefix grant covers exactly the names that start with its prefix; an exact one only
    /// its name.
    #[test]
    fn patterns_at_their_edges() {
        let grants: Grants = "user:42:*,builds".parse().unwrap();
        assert!(grants.allows(&channel("user:42:feed")));
        assert!(grants.allows(&channel("user:42:")));
        assert!(!grants.allows(&channel("user:42")));
        assert!(!grants.allows(&channel("user:420")));
        assert!(!grants.allows(&channel("user:4")));
        assert!(grants.allows(&channel("builds")));
        assert!(!grants.allows(&channel("builds2")));
        assert!(!grants.allows(&channel("build")));
        let everything: Grants = "*".parse().unwrap();
        assert!(everything.allows(&channel("anything")));
        assert!(!Grants::default().allows(&channel("anything")));
    }

    /// Wildcards anywhere but the end, and bad characters, are refused.
    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["user:*:feed", "a b", "**", "*x", "user/42", &"x".repeat(129)] {
            assert!(bad.parse::<Grants>().is_err(), "{bad}");
        }
        assert_eq!(" a , b* ,".parse::<Grants>().unwrap().to_string(), "a,b*");
    }
}
