//! The wire protocol's JSON messages: what clients may send, what the hub answers, and the
//! event envelope. Channel names are validated here ([`ChannelName`]) and nowhere else.
//!
//! Every server message is returned already framed as a WebSocket text frame
//! ([`crate::wire`]), so a message built once can be queued for any number of clients.

use std::fmt;
use std::io::Write;

use bytes::Bytes;
use serde::Deserialize;

use crate::event_id::{BadEventId, EventId};
use crate::wire;

/// Largest client frame (text message) the hub accepts: 4 KiB.
pub const MAX_CLIENT_MESSAGE: usize = 4096;
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

/// A message a client sent, once parsed and validated.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Subscribe to `channels`; those in `since` resume after the given id.
    Subscribe {
        channels: Vec<ChannelName>,
        since: Vec<(ChannelName, EventId)>,
    },
    Unsubscribe(Vec<ChannelName>),
}

/// What was wrong with a client message; sent back as an `error` message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown op {0:?}; expected subscribe or unsubscribe")]
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
/// `since=<id>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectQuery {
    pub channels: Vec<ChannelName>,
    pub since: Option<EventId>,
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

/// Reserved bytes in front of every JSON body so the frame header can be written in place.
const HEADER_ROOM: usize = wire::MAX_SERVER_HEADER;

/// Builds a framed server message: `body` writes the JSON after the reserved header room.
fn framed(capacity: usize, body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buffer = Vec::with_capacity(HEADER_ROOM + capacity);
    buffer.resize(HEADER_ROOM, 0);
    body(&mut buffer);
    wire::frame_text_in_place(buffer, HEADER_ROOM)
}

fn write_channel_list(out: &mut Vec<u8>, channels: &[ChannelName]) {
    out.push(b'[');
    for (i, channel) in channels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Channel names are [A-Za-z0-9_.:-]: nothing to escape.
        out.push(b'"');
        out.extend_from_slice(channel.as_str().as_bytes());
        out.push(b'"');
    }
    out.push(b']');
}

/// `{"channel":…,"id":…,"data":…}` as one text frame. `data` is the payload inlined when it is
/// valid JSON, else a JSON string of it (invalid UTF-8 replaced).
pub fn encode_event(channel: &ChannelName, id: &str, payload: &[u8]) -> Bytes {
    framed(payload.len() + channel.as_str().len() + id.len() + 32, |out| {
        out.extend_from_slice(b"{\"channel\":\"");
        out.extend_from_slice(channel.as_str().as_bytes());
        out.extend_from_slice(b"\",\"id\":");
        serde_json::to_writer(&mut *out, id).expect("writing JSON to a Vec cannot fail");
        out.extend_from_slice(b",\"data\":");
        if is_json(payload) {
            out.extend_from_slice(payload);
        } else {
            let text = String::from_utf8_lossy(payload);
            serde_json::to_writer(&mut *out, &text).expect("writing JSON to a Vec cannot fail");
        }
        out.push(b'}');
    })
}

fn is_json(payload: &[u8]) -> bool {
    !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// `{"op":"subscribed","channels":[…]}`
pub fn encode_subscribed(channels: &[ChannelName]) -> Bytes {
    framed(64 + channels.len() * 32, |out| {
        out.extend_from_slice(b"{\"op\":\"subscribed\",\"channels\":");
        write_channel_list(out, channels);
        out.push(b'}');
    })
}

/// `{"op":"unsubscribed","channels":[…]}`
pub fn encode_unsubscribed(channels: &[ChannelName]) -> Bytes {
    framed(64 + channels.len() * 32, |out| {
        out.extend_from_slice(b"{\"op\":\"unsubscribed\",\"channels\":");
        write_channel_list(out, channels);
        out.push(b'}');
    })
}

/// `{"op":"skipped","channel":…,"count":…,"from":…,"to":…}`: conflation dropped `count`
/// events of `channel`, ids `from` to `to`.
pub fn encode_skipped(channel: &ChannelName, count: u64, from: EventId, to: EventId) -> Bytes {
    framed(128 + channel.as_str().len(), |out| {
        write!(
            out,
            "{{\"op\":\"skipped\",\"channel\":\"{channel}\",\"count\":{count},\"from\":\"{from}\",\"to\":\"{to}\"}}"
        )
        .expect("writing to a Vec cannot fail");
    })
}

/// How a resume ended: `Ok` when nothing was missed, else why not (the `reason` field).
pub type RecoveryOutcome = Result<(), &'static str>;

/// `{"op":"recovered","channel":…,"since":…,"replayed":…,"recovered":…[,"reason":…]}`
pub fn encode_recovered(channel: &ChannelName, since: EventId, replayed: u64, outcome: RecoveryOutcome) -> Bytes {
    framed(160 + channel.as_str().len(), |out| {
        write!(out, "{{\"op\":\"recovered\",\"channel\":\"{channel}\",\"since\":\"{since}\",\"replayed\":{replayed},")
            .expect("writing to a Vec cannot fail");
        match outcome {
            Ok(()) => out.extend_from_slice(b"\"recovered\":true}"),
            Err(reason) => {
                out.extend_from_slice(b"\"recovered\":false,\"reason\":");
                serde_json::to_writer(&mut *out, reason).expect("writing JSON to a Vec cannot fail");
                out.push(b'}');
            }
        }
    })
}

/// `{"op":"closing","code":…,"last_ids":{channel:id,…}}`: sent just before the hub closes a
/// connection, with the last event id written to it per channel.
pub fn encode_closing(code: u16, last_ids: &[(ChannelName, EventId)]) -> Bytes {
    framed(64 + last_ids.len() * 180, |out| {
        write!(out, "{{\"op\":\"closing\",\"code\":{code},\"last_ids\":{{").expect("writing to a Vec cannot fail");
        for (i, (channel, id)) in last_ids.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            write!(out, "{comma}\"{channel}\":\"{id}\"").expect("writing to a Vec cannot fail");
        }
        out.extend_from_slice(b"}}");
    })
}

/// `{"op":"error","code":…,"message":…}`
pub fn encode_error(error: &RequestError) -> Bytes {
    framed(128, |out| {
        let message = error.to_string();
        write!(out, "{{\"op\":\"error\",\"code\":\"{}\",\"message\":", error.code())
            .expect("writing to a Vec cannot fail");
        serde_json::to_writer(&mut *out, &message).expect("writing JSON to a Vec cannot fail");
        out.push(b'}');
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &Bytes) -> serde_json::Value {
        let (parsed, used) = mt_testkit::parse_server_frame(frame).expect("a valid frame").expect("a complete frame");
        assert_eq!(used, frame.len());
        assert_eq!(parsed.opcode, wire::OPCODE_TEXT);
        serde_json::from_slice(&parsed.payload).expect("valid JSON")
    }

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

    /// The resume and close notices are the documented JSON.
    #[test]
    fn notices_are_documented_json() {
        let c = ChannelName::new("c").unwrap();
        assert_eq!(
            body(&encode_recovered(&c, EventId::new(1, 2), 3, Ok(()))),
            serde_json::json!({"op":"recovered","channel":"c","since":"1-2","replayed":3,"recovered":true})
        );
        assert_eq!(
            body(&encode_recovered(&c, EventId::new(1, 2), 0, Err("history truncated"))),
            serde_json::json!({"op":"recovered","channel":"c","since":"1-2","replayed":0,"recovered":false,"reason":"history truncated"})
        );
        assert_eq!(
            body(&encode_skipped(&c, 4, EventId::new(1, 0), EventId::new(2, 0))),
            serde_json::json!({"op":"skipped","channel":"c","count":4,"from":"1-0","to":"2-0"})
        );
        let d = ChannelName::new("d").unwrap();
        assert_eq!(
            body(&encode_closing(1001, &[(c, EventId::new(5, 0)), (d, EventId::new(6, 1))])),
            serde_json::json!({"op":"closing","code":1001,"last_ids":{"c":"5-0","d":"6-1"}})
        );
        assert_eq!(body(&encode_closing(4008, &[])), serde_json::json!({"op":"closing","code":4008,"last_ids":{}}));
    }

    /// JSON payloads are inlined; anything else becomes a JSON string.
    #[test]
    fn events_inline_json_and_quote_text() {
        let channel = ChannelName::new("builds").unwrap();
        let json = body(&encode_event(&channel, "7", br#"{"n":1}"#));
        assert_eq!(json, serde_json::json!({"channel":"builds","id":"7","data":{"n":1}}));
        let text = body(&encode_event(&channel, "8", b"hello \"world\""));
        assert_eq!(text["data"], "hello \"world\"");
        let big = vec![b'a'; 70_000];
        let large = body(&encode_event(&channel, "9", &big));
        assert_eq!(large["data"].as_str().unwrap().len(), 70_000);
    }

    /// Replies and errors are valid JSON with the documented fields.
    #[test]
    fn replies_are_documented_json() {
        let channels = vec![ChannelName::new("a").unwrap(), ChannelName::new("b").unwrap()];
        assert_eq!(body(&encode_subscribed(&channels)), serde_json::json!({"op":"subscribed","channels":["a","b"]}));
        let error = body(&encode_error(&RequestError::Malformed("x \"y\"".into())));
        assert_eq!(error["op"], "error");
        assert_eq!(error["code"], "bad_request");
        assert_eq!(error["message"], "malformed message: x \"y\"");
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
