//! What clients send: the `subscribe`/`unsubscribe`/`auth` messages ([`ClientMessage`]), the
//! query of the upgrade (`?channels=…&since=…&token=…`), and the errors a bad request gets
//! ([`RequestError`]). A token is kept as an [`crate::auth::Token`], which no log line can print.

use serde::Deserialize;

use super::channel::{ChannelName, ChannelNameError};
use crate::auth::Token;
use crate::event_id::{BadEventId, EventId};

/// Largest client frame (text message) the hub accepts: 9 KiB, so an `auth` message carries a
/// token of up to [`crate::auth::MAX_TOKEN`] (8 KiB).
pub const MAX_CLIENT_MESSAGE: usize = 9 * 1024;
/// A message a client sent, once parsed and validated.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Subscribe to `channels`; those in `since` resume after the given id.
    Subscribe {
        channels: Vec<ChannelName>,
        since: Vec<(ChannelName, EventId)>,
    },
    Unsubscribe(Vec<ChannelName>),
    /// A token: the first one of a connection, or a refresh.
    Auth(Token),
}

/// What was wrong with a client message; sent back as an `error` message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown op {0:?}; expected subscribe, unsubscribe or auth")]
    UnknownOp(String),
    #[error("{0}")]
    BadChannel(#[from] ChannelNameError),
    #[error("channels must list 1 to {max} names")]
    ChannelCount { max: usize },
    #[error("binary frames are not part of the protocol; send JSON text")]
    Binary,
    #[error("a connection may hold at most {max} channels")]
    TooManyChannels { max: usize },
    #[error("bad since: {0}")]
    BadSince(String),
    #[error("more than {per_second} subscribe/unsubscribe/auth messages a second; this one was not applied")]
    RateLimited { per_second: u32 },
    #[error("no grant for channel {0}; not subscribed")]
    Forbidden(ChannelName),
}

impl From<BadEventId> for RequestError {
    fn from(error: BadEventId) -> Self {
        Self::BadSince(error.to_string())
    }
}

impl RequestError {
    /// The `code` field of the error message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::UnknownOp(_) | Self::ChannelCount { .. } | Self::Binary => "bad_request",
            Self::BadChannel(_) => "bad_channel",
            Self::TooManyChannels { .. } => "too_many_channels",
            Self::BadSince(_) => "bad_since",
            Self::RateLimited { .. } => "rate_limited",
            Self::Forbidden(_) => "forbidden",
        }
    }

    /// The channel the error is about, when it is about one (the `channel` field).
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            Self::Forbidden(channel) => Some(channel),
            _ => None,
        }
    }
}

/// Most channels one connection may hold (keeps a connection's memory bounded).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 64;

#[derive(Deserialize)]
struct RawClientMessage<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(default)]
    channels: Vec<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    since: Option<RawSince<'a>>,
    #[serde(default)]
    token: Option<String>,
}

/// `since`: one id for every channel of the message, or an id per channel.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSince<'a> {
    All(#[serde(borrow)] std::borrow::Cow<'a, str>),
    PerChannel(#[serde(borrow)] std::collections::BTreeMap<std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>>),
}

impl ClientMessage {
    /// Parses a client text frame.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let raw: RawClientMessage<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::Malformed(e.to_string()))?;
        if raw.op == "auth" {
            return match raw.token {
                Some(token) if raw.channels.is_empty() && raw.since.is_none() => Ok(Self::Auth(Token(token))),
                Some(_) => Err(RequestError::Malformed("auth takes only a token".into())),
                None => Err(RequestError::Malformed("auth needs a token".into())),
            };
        }
        if !matches!(raw.op.as_ref(), "subscribe" | "unsubscribe") {
            return Err(RequestError::UnknownOp(raw.op.chars().take(32).collect()));
        }
        if raw.token.is_some() {
            return Err(RequestError::Malformed("a token goes in an auth message".into()));
        }
        if raw.channels.is_empty() || raw.channels.len() > MAX_CHANNELS_PER_CONNECTION {
            return Err(RequestError::ChannelCount { max: MAX_CHANNELS_PER_CONNECTION });
        }
        let channels = parse_channel_list(raw.channels.iter().map(|c| c.as_ref()))?;
        match raw.op.as_ref() {
            "subscribe" => {
                let since = match raw.since {
                    None => Vec::new(),
                    Some(RawSince::All(id)) => {
                        let id: EventId = id.parse()?;
                        channels.iter().map(|c| (c.clone(), id)).collect()
                    }
                    Some(RawSince::PerChannel(ids)) => {
                        let mut since = Vec::with_capacity(ids.len());
                        for (name, id) in ids {
                            let channel = ChannelName::new(&name)?;
                            if !channels.contains(&channel) {
                                return Err(RequestError::BadSince(format!("{channel} is not in channels")));
                            }
                            since.push((channel, id.parse()?));
                        }
                        since
                    }
                };
                Ok(Self::Subscribe { channels, since })
            }
            "unsubscribe" if raw.since.is_some() => Err(RequestError::BadSince("unsubscribe takes no since".into())),
            "unsubscribe" => Ok(Self::Unsubscribe(channels)),
            other => Err(RequestError::UnknownOp(other.chars().take(32).collect())),
        }
    }
}

/// Parses a list of channel names, dropping duplicates and keeping the first-seen order.
pub fn parse_channel_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<ChannelName>, RequestError> {
    let mut channels: Vec<ChannelName> = Vec::new();
    for name in names {
        let channel = ChannelName::new(name)?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// What the upgrade request's query asks for: `channels=a,b` and, to resume them all,
/// `since=<id>`, and the connection's token, `token=<JWT>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectQuery {
    pub channels: Vec<ChannelName>,
    pub since: Option<EventId>,
    pub token: Option<Token>,
}

/// Parses the query of the upgrade request (absent = no channels).
pub fn parse_connect_query(query: Option<&str>) -> Result<ConnectQuery, RequestError> {
    let Some(query) = query else { return Ok(ConnectQuery::default()) };
    let mut parsed = ConnectQuery::default();
    for pair in query.split('&') {
        if let Some(list) = pair.strip_prefix("channels=") {
            let decoded = percent_decode(list)
                .ok_or_else(|| RequestError::Malformed("bad percent-encoding in channels".into()))?;
            parsed.channels = parse_channel_list(decoded.split(',').filter(|c| !c.is_empty()))?;
        } else if let Some(id) = pair.strip_prefix("since=") {
            let decoded =
                percent_decode(id).ok_or_else(|| RequestError::BadSince("bad percent-encoding in since".into()))?;
            parsed.since = Some(decoded.parse()?);
        } else if let Some(token) = pair.strip_prefix("token=") {
            // Never echoed: a bad encoding is reported without the value.
            let decoded =
                percent_decode(token).ok_or_else(|| RequestError::Malformed("bad percent-encoding in token".into()))?;
            parsed.token = Some(Token(decoded));
        }
    }
    if parsed.channels.len() > MAX_CHANNELS_PER_CONNECTION {
        return Err(RequestError::TooManyChannels { max: MAX_CHANNELS_PER_CONNECTION });
    }
    Ok(parsed)
}

/// Decodes `%XX` escapes (and `+` as space) of a query value; `None` if malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribe and unsubscribe parse; duplicates collapse; bad input is a typed error.
    #[test]
    fn client_messages_parse() {
        assert_eq!(
            ClientMessage::parse(r#"{"op":"subscribe","channels":["a","b","a"]}"#),
            Ok(ClientMessage::Subscribe {
                channels: vec![ChannelName::new("a").unwrap(), ChannelName::new("b").unwrap()],
                since: Vec::new()
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"op":"unsubscribe","channels":["a"]}"#),
            Ok(ClientMessage::Unsubscribe(vec![ChannelName::new("a").unwrap()]))
        );
        assert!(matches!(ClientMessage::parse("{not json"), Err(RequestError::Malformed(_))));
        assert!(matches!(
            ClientMessage::parse(r#"{"op":"publish","channels":["a"]}"#),
            Err(RequestError::UnknownOp(_))
        ));
        // The op is judged first: an unknown one without channels is an unknown op.
        assert_eq!(ClientMessage::parse(r#"{"op":"nope"}"#), Err(RequestError::UnknownOp("nope".into())));
        assert!(matches!(
            ClientMessage::parse(r#"{"op":"subscribe","channels":["bad name"]}"#),
            Err(RequestError::BadChannel(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"op":"subscribe","channels":[]}"#),
            Err(RequestError::ChannelCount { .. })
        ));
    }

    /// The query form subscribes at connect time, and may resume every channel.
    #[test]
    fn channels_from_the_query() {
        let query = parse_connect_query(Some("x=1&channels=a,b%2Cc&since=5-1")).unwrap();
        let names: Vec<&str> = query.channels.iter().map(ChannelName::as_str).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(query.since, Some(EventId::new(5, 1)));
        assert_eq!(parse_connect_query(None).unwrap(), ConnectQuery::default());
        assert!(parse_connect_query(Some("channels=a,b%20c")).is_err());
        assert_eq!(parse_connect_query(Some("channels=a&since=yesterday")).unwrap_err().code(), "bad_since");
    }

    /// `since` is one id for all channels or a map per channel; bad ids and strangers are refused.
    #[test]
    fn subscribe_with_since() {
        let a = ChannelName::new("a").unwrap();
        let b = ChannelName::new("b").unwrap();
        assert_eq!(
            ClientMessage::parse(r#"{"op":"subscribe","channels":["a","b"],"since":"7-0"}"#),
            Ok(ClientMessage::Subscribe {
                channels: vec![a.clone(), b.clone()],
                since: vec![(a.clone(), EventId::new(7, 0)), (b.clone(), EventId::new(7, 0))]
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"op":"subscribe","channels":["a","b"],"since":{"b":"8-2"}}"#),
            Ok(ClientMessage::Subscribe { channels: vec![a, b.clone()], since: vec![(b, EventId::new(8, 2))] })
        );
        for bad in [
            r#"{"op":"subscribe","channels":["a"],"since":"7"}"#,
            r#"{"op":"subscribe","channels":["a"],"since":{"a":"x-1"}}"#,
            r#"{"op":"subscribe","channels":["a"],"since":{"b":"1-1"}}"#,
            r#"{"op":"unsubscribe","channels":["a"],"since":"1-1"}"#,
        ] {
            assert_eq!(ClientMessage::parse(bad).unwrap_err().code(), "bad_since", "{bad}");
        }
        assert_eq!(
            ClientMessage::parse(r#"{"op":"subscribe","channels":["a"],"since":5}"#).unwrap_err().code(),
            "bad_request"
        );
    }
}
