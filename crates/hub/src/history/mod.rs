//! Channel history: the events of kept channels, read back by id so a client can resume.
//!
//! - [`memory`]: the embedded broker's bounded in-memory history.
//! - [`redis`]: a Redis stream per channel, appended and published in one Lua script
//!   (`scripts/publish.lua`), read in pages by another (`read.lua`).
//!
//! Both answer [`History::read_after`] with the same [`Page`], so resume (`crate::recovery`)
//! behaves the same with or without Redis.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use bytes::Bytes;

use crate::event_id::EventId;
use crate::protocol::{ChannelName, ChannelPrefix};

/// Events of one channel after an id, with what the reader needs to know about gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Up to the asked count of events after the id, oldest first.
    pub entries: Vec<(EventId, Bytes)>,
    /// The newest id the channel ever had.
    pub last_id: EventId,
    /// The newest id trimmed away (`0-0` when nothing was): events after an id older than this
    /// are missing.
    pub max_deleted: EventId,
}

/// How much one read may return: at most `events` events, and no more than `bytes` of payload
/// (but always at least one event, however large, so a read always makes progress). Resume
/// holds one page while its client drains, so the byte bound is what a stalled client costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    pub events: usize,
    pub bytes: usize,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The channel has no history (never published, or expired).
    NoStream,
    Page(Page),
    /// The channel's key exists but cannot be read as history (e.g. it is not a stream). Final:
    /// reading again gives the same answer.
    Unreadable(String),
}

impl Page {
    /// Whether events after the page's last may exist (it stopped at its limit, not at the end).
    pub fn may_have_more(&self) -> bool {
        self.entries.last().is_some_and(|(id, _)| *id < self.last_id)
    }
}

/// Why history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("unexpected reply from the history script: {0}")]
    Reply(String),
}

/// The history of the active source.
#[derive(Clone)]
pub enum History {
    Memory(Arc<memory::MemoryHistory>),
    Redis { commands: crate::source::redis::Commands, prefix: ChannelPrefix },
}

impl History {
    /// The events of `channel` after `since`, within `limit`.
    pub async fn read_after(
        &self,
        channel: &ChannelName,
        since: EventId,
        limit: PageLimit,
    ) -> Result<Read, HistoryError> {
        match self {
            Self::Memory(memory) => Ok(memory.read_after(channel, since, limit)),
            Self::Redis { commands, prefix } => {
                let key = prefix.redis_channel(channel);
                let client = commands.for_key(&key)?;
                redis::read_after(&client, &key, since, limit)
                    .await
                    .inspect_err(|error| commands.after_error(&client, error))
            }
        }
    }
}
