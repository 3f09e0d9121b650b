//! History in Redis: one stream per kept channel at `<prefix><channel>`, appended and published
//! atomically by `scripts/publish.lua` (also the script other services use), read in pages by
//! `read.lua`. A live message of a kept channel is `<RS><id><RS><payload>` (RS = 0x1E), so
//! subscribers learn the id the event has in history.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{HistoryError, Page, PageLimit, Read};
use crate::event_id::EventId;
use crate::policy::HistoryLimits;

/// The publish script, as shipped for other services in `scripts/publish.lua`.
pub const PUBLISH_SCRIPT: &str = include_str!("../../../../scripts/publish.lua");
const READ_SCRIPT: &str = include_str!("read.lua");
/// Longest wait for one history command.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Separates the id from the payload in a live message.
pub const RECORD_SEPARATOR: u8 = 0x1E;

fn publish_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::from_lua(PUBLISH_SCRIPT))
}

fn read_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::from_lua(READ_SCRIPT))
}

async fn timed<T>(future: impl std::future::Future<Output = Result<T, fred::error::Error>>) -> Result<T, HistoryError> {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(HistoryError::Timeout(TIMEOUT)),
    }
}

/// ARGV of `publish.lua`: payload, events kept, age limit in ms, and `spublish` or `publish`.
pub fn publish_args(payload: Bytes, limits: &HistoryLimits, sharded: bool) -> Vec<Value> {
    vec![
        Value::Bytes(payload),
        Value::Integer(limits.max_events.min(i64::MAX as u64) as i64),
        Value::Integer(limits.max_age.as_millis().min(i64::MAX as u128) as i64),
        Value::String(if sharded { "spublish" } else { "publish" }.into()),
    ]
}

/// Appends to the stream `key` and publishes on the channel `key`, in one step; returns the id.
/// `sharded`: SPUBLISH (Redis Cluster: the stream and the channel share `key`'s slot), else
/// PUBLISH.
pub async fn publish(
    client: &Client,
    key: &str,
    payload: Bytes,
    limits: &HistoryLimits,
    sharded: bool,
) -> Result<EventId, HistoryError> {
    let id: String =
        timed(publish_script().evalsha_with_reload(client, key, publish_args(payload, limits, sharded))).await?;
    id.parse().map_err(|e: crate::event_id::BadEventId| HistoryError::Reply(e.to_string()))
}

/// The events of the stream `key` after `since`, within `limit`.
pub async fn read_after(client: &Client, key: &str, since: EventId, limit: PageLimit) -> Result<Read, HistoryError> {
    let args: Vec<Value> = vec![
        Value::String(since.to_string().into()),
        Value::Integer(limit.events.min(i64::MAX as usize) as i64),
        Value::Integer(limit.bytes.min(i64::MAX as usize) as i64),
    ];
    let reply: Value = timed(read_script().evalsha_with_reload(client, key, args)).await?;
    parse_read_reply(reply)
}

fn parse_read_reply(reply: Value) -> Result<Read, HistoryError> {
    let bad = |what: &str| HistoryError::Reply(what.to_owned());
    let parts = match reply {
        Value::Null => return Ok(Read::NoStream),
        Value::Array(parts) if parts.len() == 2 && parts[0].as_str().as_deref() == Some("unreadable") => {
            let why = parts[1].as_string().unwrap_or_default();
            return Ok(Read::Unreadable(why));
        }
        Value::Array(parts) if parts.len() == 3 => parts,
        other => return Err(bad(&format!("expected 3 parts, got {other:?}"))),
    };
    let mut parts = parts.into_iter();
    let id = |value: Option<Value>| -> Result<EventId, HistoryError> {
        value.and_then(|v| v.as_string()).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad id"))
    };
    let last_id = id(parts.next())?;
    let max_deleted = id(parts.next())?;
    let Some(Value::Array(rows)) = parts.next() else {
        return Err(bad("entries are not an array"));
    };
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Array(row) = row else { return Err(bad("entry is not an array")) };
        let mut row = row.into_iter();
        let entry_id = id(row.next())?;
        let Some(Value::Array(fields)) = row.next() else { return Err(bad("entry fields are not an array")) };
        // Fields are ["d", payload]; the payload is the value after the "d" field.
        let payload =
            fields.into_iter().nth(1).and_then(|v| v.into_bytes()).ok_or_else(|| bad("entry without payload"))?;
        entries.push((entry_id, payload));
    }
    Ok(Read::Page(Page { entries, last_id, max_deleted }))
}

/// Splits a live message into the id the publish script put in front and the payload; a
/// message published without the script has no id.
pub fn split_live_message(message: &[u8]) -> (Option<EventId>, &[u8]) {
    if message.first() != Some(&RECORD_SEPARATOR) {
        return (None, message);
    }
    let rest = &message[1..];
    let Some(end) = rest.iter().take(crate::event_id::MAX_ID_LEN + 1).position(|&b| b == RECORD_SEPARATOR) else {
        return (None, message);
    };
    match std::str::from_utf8(&rest[..end]).ok().and_then(|text| text.parse().ok()) {
        Some(id) => (Some(id), &rest[end + 1..]),
        None => (None, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id comes off the front of a scripted live message; other messages pass untouched.
    #[test]
    fn live_messages_split() {
        assert_eq!(split_live_message(b"\x1e17-3\x1e{\"a\":1}"), (Some(EventId::new(17, 3)), &b"{\"a\":1}"[..]));
        assert_eq!(split_live_message(b"\x1e17-3\x1e"), (Some(EventId::new(17, 3)), &b""[..]));
        assert_eq!(split_live_message(b"plain"), (None, &b"plain"[..]));
        assert_eq!(split_live_message(b"\x1enot-an-id\x1ex"), (None, &b"\x1enot-an-id\x1ex"[..]));
        assert_eq!(split_live_message(b"\x1e17-3"), (None, &b"\x1e17-3"[..]));
    }

    /// The read script's reply becomes a page; a missing stream is its own answer.
    #[test]
    fn read_replies_parse() {
        assert_eq!(parse_read_reply(Value::Null).unwrap(), Read::NoStream);
        let entry = |id: &str, data: &str| {
            Value::Array(vec![id.into(), Value::Array(vec!["d".into(), Value::Bytes(Bytes::from(data.to_owned()))])])
        };
        let reply =
            Value::Array(vec!["9-0".into(), "2-0".into(), Value::Array(vec![entry("3-0", "x"), entry("4-1", "y")])]);
        let Read::Page(page) = parse_read_reply(reply).unwrap() else { panic!("a page") };
        assert_eq!(page.last_id, EventId::new(9, 0));
        assert_eq!(page.max_deleted, EventId::new(2, 0));
        assert_eq!(page.entries, vec![(EventId::new(3, 0), Bytes::from("x")), (EventId::new(4, 1), Bytes::from("y"))]);
        assert!(parse_read_reply(Value::Integer(1)).is_err());
        let unreadable = Value::Array(vec!["unreadable".into(), "the key is a string, not a stream".into()]);
        assert_eq!(
            parse_read_reply(unreadable).unwrap(),
            Read::Unreadable("the key is a string, not a stream".to_owned())
        );
    }
}
