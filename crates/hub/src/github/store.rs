//! What the GitHub source remembers between polls and between pods: the poller's lease, each
//! polled target's cursor (ETag and newest event id), and when each repository's webhook last
//! delivered. In Redis when the hub uses Redis (every key under the hash tag
//! `{<prefix>github}`, so a cluster keeps them on one shard and a script may touch several),
//! in memory with the embedded broker (one process: it always holds the lease).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use crate::lock::lock;
use crate::source::redis::{Commands, COMMAND_TIMEOUT};

/// Where a polled target stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The first page's `ETag`, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// The newest event id published (or skipped as already seen).
    pub newest: Option<u64>,
}

/// A Redis command that failed or timed out.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct StoreError(String);

impl From<fred::error::Error> for StoreError {
    fn from(error: fred::error::Error) -> Self {
        Self(crate::publish::describe_redis_error(&error))
    }
}

/// Takes the lease if free, renews it if ours: KEYS[1] lease, ARGV[1] holder, ARGV[2] ms.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Saves a cursor only while the lease is ours: KEYS[1] lease, KEYS[2] cursor, ARGV[1]
/// holder, ARGV[2] etag, ARGV[3] newest id.
const SAVE_CURSOR: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'etag', ARGV[2], 'newest', ARGV[3])
return 1
";

/// Deletes the lease if ours: KEYS[1] lease, ARGV[1] holder.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

fn script(cell: &'static OnceLock<Script>, lua: &str) -> &'static Script {
    cell.get_or_init(|| Script::from_lua(lua))
}

static LEASE_SCRIPT: OnceLock<Script> = OnceLock::new();
static SAVE_SCRIPT: OnceLock<Script> = OnceLock::new();
static RELEASE_SCRIPT: OnceLock<Script> = OnceLock::new();

/// How long a webhook's last-delivery time is kept in Redis.
const WEBHOOK_SEEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The state, in Redis or in this process.
pub enum Store {
    Redis { commands: Commands, tag: String },
    Memory(Mutex<MemoryState>),
}

#[derive(Default)]
pub struct MemoryState {
    cursors: HashMap<String, Cursor>,
    webhooks: HashMap<String, u64>,
}

async fn timed<T>(call: impl std::future::Future<Output = Result<T, fred::error::Error>>) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError(format!("no answer within {COMMAND_TIMEOUT:?}"))),
    }
}

impl Store {
    /// Redis state under `{<prefix>github}`.
    pub fn redis(commands: Commands, prefix: &str) -> Self {
        Self::Redis { commands, tag: format!("{{{prefix}github}}") }
    }

    pub fn memory() -> Self {
        Self::Memory(Mutex::default())
    }

    fn client(commands: &Commands, tag: &str) -> Result<Client, StoreError> {
        Ok(commands.for_key(tag)?)
    }

    /// Takes or renews the poller's lease for `ttl`; `true` while `holder` has it.
    pub async fn hold_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let Self::Redis { commands, tag } = self else { return Ok(true) };
        let client = Self::client(commands, tag)?;
        let args = vec![Value::from(holder), Value::Integer(ttl.as_millis() as i64)];
        let held: i64 =
            timed(script(&LEASE_SCRIPT, LEASE).evalsha_with_reload(&client, format!("{tag}:lease"), args)).await?;
        Ok(held == 1)
    }

    /// Gives the lease up if `holder` has it (a pod stopping), so the next one starts at once.
    pub async fn release_lease(&self, holder: &str) -> Result<(), StoreError> {
        let Self::Redis { commands, tag } = self else { return Ok(()) };
        let client = Self::client(commands, tag)?;
        let _: i64 = timed(script(&RELEASE_SCRIPT, RELEASE).evalsha_with_reload(
            &client,
            format!("{tag}:lease"),
            vec![Value::from(holder)],
        ))
        .await?;
        Ok(())
    }

    pub async fn cursor(&self, target: &str) -> Result<Cursor, StoreError> {
        match self {
            Self::Memory(state) => Ok(lock(state).cursors.get(target).cloned().unwrap_or_default()),
            Self::Redis { commands, tag } => {
                let client = Self::client(commands, tag)?;
                let fields: HashMap<String, String> = timed(client.hgetall(format!("{tag}:cursor:{target}"))).await?;
                Ok(Cursor {
                    etag: fields.get("etag").filter(|e| !e.is_empty()).cloned(),
                    newest: fields.get("newest").and_then(|n| n.parse().ok()),
                })
            }
        }
    }

    /// Saves `cursor` for `target`; `false` (nothing saved) when `holder` no longer has the
    /// lease.
    pub async fn save_cursor(&self, holder: &str, target: &str, cursor: &Cursor) -> Result<bool, StoreError> {
        match self {
            Self::Memory(state) => {
                lock(state).cursors.insert(target.to_owned(), cursor.clone());
                Ok(true)
            }
            Self::Redis { commands, tag } => {
                let client = Self::client(commands, tag)?;
                let keys = vec![format!("{tag}:lease"), format!("{tag}:cursor:{target}")];
                let args = vec![
                    Value::from(holder),
                    Value::from(cursor.etag.clone().unwrap_or_default()),
                    Value::from(cursor.newest.map(|n| n.to_string()).unwrap_or_default()),
                ];
                let saved: i64 =
                    timed(script(&SAVE_SCRIPT, SAVE_CURSOR).evalsha_with_reload(&client, keys, args)).await?;
                Ok(saved == 1)
            }
        }
    }

    /// Notes that `repo`'s (`owner/repo`, lower case) webhook delivered at `at_ms`.
    pub async fn mark_webhook(&self, repo: &str, at_ms: u64) -> Result<(), StoreError> {
        match self {
            Self::Memory(state) => {
                lock(state).webhooks.insert(repo.to_owned(), at_ms);
                Ok(())
            }
            Self::Redis { commands, tag } => {
                let client = Self::client(commands, tag)?;
                let expire = Some(fred::types::Expiration::PX(WEBHOOK_SEEN_TTL.as_millis() as i64));
                let _: Value =
                    timed(client.set(format!("{tag}:webhook:{repo}"), at_ms.to_string(), expire, None, false)).await?;
                Ok(())
            }
        }
    }

    /// When `repo`'s webhook last delivered (ms since the epoch), if it ever did.
    pub async fn last_webhook(&self, repo: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Memory(state) => Ok(lock(state).webhooks.get(repo).copied()),
            Self::Redis { commands, tag } => {
                let client = Self::client(commands, tag)?;
                let at: Option<String> = timed(client.get(format!("{tag}:webhook:{repo}"))).await?;
                Ok(at.and_then(|a| a.parse().ok()))
            }
        }
    }
}
