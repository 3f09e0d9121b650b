//! The small typed values settings parse into, each with [`FromStr`] and a lower-case reason
//! on failure (the hub's own types, such as `ChannelPrefix`, have theirs beside them).

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use super::error::Expected;
use super::MIN_PUBLISH_TOKEN;

/// A positive integer of type `T` (`NonZeroUsize`, `NonZeroU64`); surrounding spaces ignored.
pub(super) struct Positive<T>(pub T);

impl<T: FromStr> FromStr for Positive<T> {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim().parse().map(Positive).map_err(|_| Expected::new("a positive integer", text))
    }
}

/// A positive number of milliseconds.
pub(super) struct Millis(pub Duration);

impl FromStr for Millis {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Positive(ms) = text.parse::<Positive<NonZeroU64>>()?;
        Ok(Self(Duration::from_millis(ms.get())))
    }
}

/// A positive number of seconds.
pub(super) struct PositiveSeconds(pub Duration);

impl FromStr for PositiveSeconds {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Positive(secs) = text.parse::<Positive<NonZeroU64>>()?;
        Ok(Self(Duration::from_secs(secs.get())))
    }
}

/// A number of whole seconds, zero included.
pub(super) struct WholeSeconds(pub Duration);

impl FromStr for WholeSeconds {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let secs = text.trim().parse::<u64>().map_err(|_| Expected::new("whole seconds", text))?;
        Ok(Self(Duration::from_secs(secs)))
    }
}

/// An `ip:port` to listen on (a host name is not accepted; spaces are not trimmed).
pub(super) struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = Expected;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self).map_err(|_| Expected::new("host:port such as 0.0.0.0:8080", text))
    }
}

/// A comma-separated Origin allow-list; trailing `/` removed, `null` allowed.
pub(super) struct Origins(pub Vec<String>);

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
pub(super) struct PublishToken(pub String);

impl FromStr for PublishToken {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.len() < MIN_PUBLISH_TOKEN {
            return Err(format!("must be at least {MIN_PUBLISH_TOKEN} characters"));
        }
        Ok(Self(token.to_owned()))
    }
}
