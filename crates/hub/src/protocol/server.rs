//! What the hub sends: the event envelope and every reply and notice, each returned already
//! framed as a WebSocket text frame ([`crate::wire`]), so a message built once can be queued
//! for any number of clients.

use std::io::Write;

use bytes::Bytes;

use super::channel::ChannelName;
use super::client::RequestError;
use crate::event_id::EventId;
use crate::wire;

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
/// Why a resume could not deliver exactly what the client missed (`recovered: false`). A closed
/// set: each has its `reason` text on the wire and its label on `mt_stream_resumes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResumeFailure {
    /// History was trimmed past the client's id: events were lost between it and the oldest kept.
    Truncated,
    /// The channel's history expired (or never existed): nothing to replay from.
    Expired,
    /// The id is newer than anything the channel has had.
    UnknownId,
    /// The channel keeps no history (`MT_HISTORY_CHANNELS`).
    NoHistory,
    /// The channel's history cannot be read (its Redis key is not a stream, or Redis refused the
    /// read): the subscription went live without a replay.
    Unreadable,
    /// History could not be reached (Redis down) for 10 s: the subscription went live without a
    /// replay.
    Unavailable,
}

impl ResumeFailure {
    pub const ALL: [Self; 6] =
        [Self::Truncated, Self::Expired, Self::UnknownId, Self::NoHistory, Self::Unreadable, Self::Unavailable];

    /// The `reason` of the `recovered` notice.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "history truncated",
            Self::Expired => "history expired",
            Self::UnknownId => "unknown id",
            Self::NoHistory => "no history kept for this channel",
            Self::Unreadable => "history unreadable",
            Self::Unavailable => "history unavailable",
        }
    }

    /// The `outcome` label of `mt_stream_resumes_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Expired => "expired",
            Self::UnknownId => "unknown_id",
            Self::NoHistory => "no_history",
            Self::Unreadable => "unreadable",
            Self::Unavailable => "unavailable",
        }
    }
}

/// How a resume ended: exact, or why not.
pub type RecoveryOutcome = Result<(), ResumeFailure>;

/// `{"op":"recovered","channel":…,"since":…,"replayed":…,"recovered":…[,"reason":…]}`
pub fn encode_recovered(channel: &ChannelName, since: EventId, replayed: u64, outcome: RecoveryOutcome) -> Bytes {
    framed(160 + channel.as_str().len(), |out| {
        write!(out, "{{\"op\":\"recovered\",\"channel\":\"{channel}\",\"since\":\"{since}\",\"replayed\":{replayed},")
            .expect("writing to a Vec cannot fail");
        match outcome {
            Ok(()) => out.extend_from_slice(b"\"recovered\":true}"),
            Err(reason) => {
                out.extend_from_slice(b"\"recovered\":false,\"reason\":");
                serde_json::to_writer(&mut *out, reason.reason()).expect("writing JSON to a Vec cannot fail");
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

/// `{"op":"unsubscribed","channels":[…],"reason":"forbidden"}`: a refreshed token no longer
/// grants these channels, so the hub unsubscribed them.
pub fn encode_revoked(channels: &[ChannelName]) -> Bytes {
    framed(96 + channels.len() * 32, |out| {
        out.extend_from_slice(b"{\"op\":\"unsubscribed\",\"channels\":");
        write_channel_list(out, channels);
        out.extend_from_slice(b",\"reason\":\"forbidden\"}");
    })
}

/// `{"op":"authenticated","sub":…,"expires_in":…}` for a verified token, or
/// `{"op":"authenticated","verified":false}` when the hub checks no tokens (no key set).
pub fn encode_authenticated(verified: Option<(&str, u64)>) -> Bytes {
    framed(96, |out| match verified {
        Some((subject, expires_in)) => {
            out.extend_from_slice(b"{\"op\":\"authenticated\",\"verified\":true,\"sub\":");
            serde_json::to_writer(&mut *out, subject).expect("writing JSON to a Vec cannot fail");
            write!(out, ",\"expires_in\":{expires_in}}}").expect("writing to a Vec cannot fail");
        }
        None => out.extend_from_slice(b"{\"op\":\"authenticated\",\"verified\":false}"),
    })
}

/// `{"op":"token_expiring","in_seconds":N}`: send an `auth` message with a fresh token before then.
pub fn encode_token_expiring(in_seconds: u64) -> Bytes {
    framed(48, |out| {
        write!(out, "{{\"op\":\"token_expiring\",\"in_seconds\":{in_seconds}}}").expect("writing to a Vec cannot fail")
    })
}

/// `{"op":"error","code":…[,"channel":…],"message":…}`
pub fn encode_error(error: &RequestError) -> Bytes {
    framed(160, |out| {
        let message = error.to_string();
        write!(out, "{{\"op\":\"error\",\"code\":\"{}\",", error.code()).expect("writing to a Vec cannot fail");
        if let Some(channel) = error.channel() {
            write!(out, "\"channel\":\"{channel}\",").expect("writing to a Vec cannot fail");
        }
        out.extend_from_slice(b"\"message\":");
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

    /// The resume and close notices are the documented JSON.
    #[test]
    fn notices_are_documented_json() {
        let c = ChannelName::new("c").unwrap();
        assert_eq!(
            body(&encode_recovered(&c, EventId::new(1, 2), 3, Ok(()))),
            serde_json::json!({"op":"recovered","channel":"c","since":"1-2","replayed":3,"recovered":true})
        );
        assert_eq!(
            body(&encode_recovered(&c, EventId::new(1, 2), 0, Err(ResumeFailure::Truncated))),
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
}
