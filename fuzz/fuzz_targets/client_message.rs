//! What a client asks for: the JSON ops of its text messages (`mt_hub::protocol::ClientMessage`)
//! and the query of its upgrade request (`mt_hub::protocol::parse_connect_query`).
//!
//! Input: arbitrary text, given to both parsers (an `auth` message's token is checked only for
//! surviving the round trip; the `token` target fuzzes its verification). Checked: no panic; what parses is valid (every
//! channel name follows the name rules, no name twice, 1 to `MAX_CHANNELS_PER_CONNECTION` names
//! in a message and at most that many in a query, `since` only for channels of the message);
//! a parsed message written back as JSON parses to the same message; the reply the hub sends
//! (`subscribed`, `unsubscribed` or `error`) is one valid text frame of the documented JSON.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use mt_hub::event_id::EventId;
use mt_hub::protocol::{
    self, parse_connect_query, ChannelName, ClientMessage, MAX_CHANNELS_PER_CONNECTION, MAX_CHANNEL_NAME,
};
use serde_json::{json, Value};

/// The error codes of docs/protocol.md.
const CODES: [&str; 4] = ["bad_request", "bad_channel", "too_many_channels", "bad_since"];

/// The channel-name rules of docs/protocol.md, checked on the parsed names; no name twice.
fn check_channels(channels: &[ChannelName]) {
    let mut seen = HashSet::new();
    for channel in channels {
        let name = channel.as_str();
        assert!((1..=MAX_CHANNEL_NAME).contains(&name.len()), "{name:?}: {} bytes", name.len());
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)),
            "{name:?} has a character outside [A-Za-z0-9_.:-]"
        );
        assert!(seen.insert(name), "{name:?} listed twice");
    }
}

/// The JSON body of a server text frame, which must be the whole of `frame`.
fn body(frame: &[u8]) -> Value {
    let (parsed, used) =
        mt_testkit::parse_server_frame(frame).expect("a valid server frame").expect("a complete server frame");
    assert_eq!(used, frame.len());
    assert!(parsed.fin);
    assert_eq!(parsed.opcode, mt_testkit::opcode::TEXT);
    serde_json::from_slice(&parsed.payload).expect("the reply is JSON")
}

fn names(channels: &[ChannelName]) -> Vec<&str> {
    channels.iter().map(ChannelName::as_str).collect()
}

fn check_id(id: EventId) {
    assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
}

fn check_message(text: &str) {
    let message = match ClientMessage::parse(text) {
        Ok(message) => message,
        Err(error) => {
            assert!(CODES.contains(&error.code()), "{error:?}");
            let reply = body(&protocol::encode_error(&error));
            assert_eq!(reply, json!({"op": "error", "code": error.code(), "message": error.to_string()}));
            return;
        }
    };
    let (op, channels) = match &message {
        ClientMessage::Subscribe { channels, since } => {
            let mut resumed = HashSet::new();
            for (channel, id) in since {
                assert!(channels.contains(channel), "since names {channel}, not in {channels:?}");
                assert!(resumed.insert(channel), "since names {channel} twice");
                check_id(*id);
            }
            ("subscribe", channels)
        }
        ClientMessage::Unsubscribe(channels) => ("unsubscribe", channels),
        ClientMessage::Auth(token) => {
            // Written back as JSON, it parses to the same token.
            let again = json!({"op": "auth", "token": token.0});
            assert_eq!(ClientMessage::parse(&again.to_string()), Ok(ClientMessage::Auth(token.clone())));
            return;
        }
    };
    assert!((1..=MAX_CHANNELS_PER_CONNECTION).contains(&channels.len()), "{} channels", channels.len());
    check_channels(channels);
    let reply = match op {
        "subscribe" => body(&protocol::encode_subscribed(channels)),
        _ => body(&protocol::encode_unsubscribed(channels)),
    };
    assert_eq!(reply, json!({"op": format!("{op}d"), "channels": names(channels)}));

    // Written back as JSON (since as an object), it parses to the same message.
    let mut again = json!({"op": op, "channels": names(channels)});
    if let ClientMessage::Subscribe { since, .. } = &message {
        let since: serde_json::Map<String, Value> =
            since.iter().map(|(channel, id)| (channel.to_string(), Value::from(id.to_string()))).collect();
        again["since"] = Value::Object(since);
    }
    let reparsed = ClientMessage::parse(&again.to_string()).expect("the message written back parses");
    assert_eq!(sorted(reparsed), sorted(message), "{again}");
}

/// The message with its `since` list in one order (a string `since` lists channels in the
/// message's order, an object in its keys' order).
fn sorted(mut message: ClientMessage) -> ClientMessage {
    if let ClientMessage::Subscribe { since, .. } = &mut message {
        since.sort();
    }
    message
}

fn check_query(query: &str) {
    match parse_connect_query(Some(query)) {
        Ok(parsed) => {
            assert!(parsed.channels.len() <= MAX_CHANNELS_PER_CONNECTION, "{} channels", parsed.channels.len());
            check_channels(&parsed.channels);
            if let Some(id) = parsed.since {
                check_id(id);
            }
        }
        // The refusal is the body of a 400.
        Err(error) => assert!(CODES.contains(&error.code()) && !error.to_string().is_empty(), "{error:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_message(text);
    check_query(text);
});
