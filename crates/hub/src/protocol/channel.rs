//! Channel names ([`ChannelName`], validated here and nowhere else) and the Redis prefix that
//! maps them to Redis channels and stream keys ([`ChannelPrefix`]).

use std::fmt;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_NAME: usize = 128;

/// A validated channel name: 1–128 bytes of `[A-Za-z0-9_.:-]`. Shared, not copied, when
/// cloned (every published event carries its channel's name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(std::sync::Arc<str>);

/// Why a channel name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelNameError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_NAME} bytes")]
    TooLong,
    #[error("channel name {0:?} has a character outside [A-Za-z0-9_.:-]")]
    BadCharacter(String),
}

impl ChannelName {
    /// Equality that looks at the shared name first: clones of one name compare without
    /// reading the bytes.
    pub fn same(&self, other: &ChannelName) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }

    pub fn new(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_CHANNEL_NAME {
            return Err(ChannelNameError::TooLong);
        }
        if !name.bytes().all(is_channel_byte) {
            return Err(ChannelNameError::BadCharacter(name.chars().take(MAX_CHANNEL_NAME).collect()));
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the bytes a channel name may contain.
    pub fn is_name_byte(b: u8) -> bool {
        is_channel_byte(b)
    }
}

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Redis channel prefix (`MT_CHANNEL_PREFIX`): maps hub channels to Redis channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPrefix(String);

impl ChannelPrefix {
    /// A prefix may be empty; otherwise it uses the channel-name characters.
    pub fn new(prefix: &str) -> Result<Self, ChannelNameError> {
        if prefix.len() > MAX_CHANNEL_NAME {
            return Err(ChannelNameError::TooLong);
        }
        if !prefix.bytes().all(is_channel_byte) {
            return Err(ChannelNameError::BadCharacter(prefix.to_owned()));
        }
        Ok(Self(prefix.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Redis channel of a hub channel.
    pub fn redis_channel(&self, channel: &ChannelName) -> String {
        format!("{}{}", self.0, channel)
    }

    /// The hub channel of a Redis channel, if it carries this prefix and a valid name.
    pub fn hub_channel(&self, redis_channel: &str) -> Option<ChannelName> {
        redis_channel.strip_prefix(self.0.as_str()).and_then(|name| ChannelName::new(name).ok())
    }
}

impl std::str::FromStr for ChannelPrefix {
    type Err = ChannelNameError;

    fn from_str(prefix: &str) -> Result<Self, Self::Err> {
        Self::new(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel names are 1–128 bytes of [A-Za-z0-9_.:-].
    #[test]
    fn channel_names_are_validated() {
        assert!(ChannelName::new("builds").is_ok());
        assert!(ChannelName::new("a.b:c-d_e9").is_ok());
        assert!(ChannelName::new(&"x".repeat(128)).is_ok());
        assert_eq!(ChannelName::new(""), Err(ChannelNameError::Empty));
        assert_eq!(ChannelName::new(&"x".repeat(129)), Err(ChannelNameError::TooLong));
        assert!(matches!(ChannelName::new("a b"), Err(ChannelNameError::BadCharacter(_))));
        assert!(matches!(ChannelName::new("a/b"), Err(ChannelNameError::BadCharacter(_))));
        assert!(matches!(ChannelName::new("é"), Err(ChannelNameError::BadCharacter(_))));
    }

    /// The prefix maps hub channels to Redis channels and back.
    #[test]
    fn prefix_maps_channels() {
        let prefix = ChannelPrefix::new("mt:").unwrap();
        let channel = ChannelName::new("builds").unwrap();
        assert_eq!(prefix.redis_channel(&channel), "mt:builds");
        assert_eq!(prefix.hub_channel("mt:builds"), Some(channel));
        assert_eq!(prefix.hub_channel("other:builds"), None);
    }
}
