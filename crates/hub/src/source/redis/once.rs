//! Publishing an event at most once per key, across every pod: the publish and a marker key
//! (`SET NX PX`) in one script, so a crash between them cannot leave one without the other.
//! The marker is `{<prefix><channel>}:once:<key>`: its hash tag puts it in the channel's slot,
//! where a cluster runs the script.
//!
//! `once.lua` prefixes the history script (`scripts/publish.lua`) with the marker check; a
//! channel without history gets a plain `PUBLISH` behind the same check.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{RedisSource, COMMAND_TIMEOUT};
use crate::history::redis::{publish_args, PUBLISH_SCRIPT};
use crate::protocol::ChannelName;
use crate::source::{PublishError, PublishOnce};

/// The marker check: ARGV[5] is the marker's lifetime in milliseconds.
const ONCE_CHECK: &str = "if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return false end\n";

/// The marker check, then a plain (S)PUBLISH: ARGV[1] payload, ARGV[2] lifetime, ARGV[3] command.
const PLAIN_ONCE: &str = "if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return false end\n\
redis.call(ARGV[3], KEYS[1], ARGV[1])\nreturn 'published'\n";

fn history_once() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::from_lua(format!("{ONCE_CHECK}{PUBLISH_SCRIPT}")))
}

fn plain_once() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::from_lua(PLAIN_ONCE))
}

impl RedisSource {
    /// Publishes `payload` on `channel` unless an event with `once` was published there within
    /// `remember`.
    pub async fn publish_once(
        &self,
        channel: &ChannelName,
        payload: Bytes,
        once: &str,
        remember: Duration,
    ) -> Result<PublishOnce, PublishError> {
        let key = self.prefix.redis_channel(channel);
        let marker = format!("{{{key}}}:once:{once}");
        let policies = self.hub.policies();
        let sharded = self.commands.sharded();
        let client = self.commands.for_key(&key)?;
        let remember_ms = Value::Integer(remember.as_millis().min(i64::MAX as u128) as i64);
        let keys = vec![key, marker];
        let call = if policies.keeps_history(channel) {
            let mut args = publish_args(payload, &policies.limits, sharded);
            args.push(remember_ms);
            history_once().evalsha_with_reload::<Value, _, _>(&client, keys, args)
        } else {
            let command = if sharded { "SPUBLISH" } else { "PUBLISH" };
            let args: Vec<Value> = vec![Value::Bytes(payload), remember_ms, Value::String(command.into())];
            plain_once().evalsha_with_reload::<Value, _, _>(&client, keys, args)
        };
        let reply = match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                self.commands.after_error(&client, &error);
                return Err(PublishError::Redis(error));
            }
            Err(_) => return Err(PublishError::Timeout(COMMAND_TIMEOUT)),
        };
        match reply {
            Value::Null => Ok(PublishOnce::Duplicate),
            reply => {
                self.hub.metrics.messages_published.inc();
                let text = reply.as_string().unwrap_or_default();
                let id = match text.as_str() {
                    "published" => None,
                    id => Some(id.parse().map_err(|e: crate::event_id::BadEventId| {
                        PublishError::History(crate::history::HistoryError::Reply(e.to_string()))
                    })?),
                };
                Ok(PublishOnce::Published(id))
            }
        }
    }
}
