//! The embedded broker's history: per channel, the newest events in memory, trimmed like the
//! Redis streams (by count and age), and bounded in all by a byte cap: past it, the oldest
//! events of any channel go first. Memory therefore never grows with channels or time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use super::{Page, PageLimit, Read};
use crate::event_id::EventId;
use crate::lock::lock;
use crate::policy::HistoryLimits;
use crate::protocol::ChannelName;

/// Bytes charged per kept event on top of its payload (ids, queue slots, map share).
const EVENT_OVERHEAD: usize = 64;

struct ChannelHistory {
    events: VecDeque<(EventId, Bytes)>,
    last_id: EventId,
    max_deleted: EventId,
}

#[derive(Default)]
struct State {
    channels: HashMap<ChannelName, ChannelHistory>,
    /// Every kept event in publish order (with stale entries for events trimmed by count),
    /// so the byte cap and the age limit can evict the oldest event of any channel.
    order: VecDeque<(ChannelName, EventId)>,
    bytes: usize,
    events: usize,
}

/// The in-memory history.
pub struct MemoryHistory {
    state: Mutex<State>,
    limits: HistoryLimits,
    byte_cap: usize,
}

impl MemoryHistory {
    pub fn new(limits: HistoryLimits, byte_cap: usize) -> Self {
        Self { state: Mutex::new(State::default()), limits, byte_cap }
    }

    /// Appends an event at wall-clock `now_ms`; returns its id. The payload is copied: a kept
    /// event must not pin the (much larger) buffer it was read into.
    pub fn append(&self, channel: &ChannelName, payload: Bytes, now_ms: u64) -> EventId {
        let payload = Bytes::copy_from_slice(&payload);
        let mut state = lock(&self.state);
        let state = &mut *state;
        let mut created = false;
        let history = state.channels.entry(channel.clone()).or_insert_with(|| {
            created = true;
            ChannelHistory { events: VecDeque::new(), last_id: EventId::default(), max_deleted: EventId::default() }
        });
        let id = EventId::next_after(history.last_id, now_ms);
        history.last_id = id;
        if created {
            // A new history knows nothing of what came before its first event (a restart, or
            // events evicted with the channel): a resume from an older id reports truncation.
            history.max_deleted = id;
        }
        state.bytes += payload.len() + EVENT_OVERHEAD;
        state.events += 1;
        history.events.push_back((id, payload));
        state.order.push_back((channel.clone(), id));
        while history.events.len() as u64 > self.limits.max_events {
            let (old, payload) = history.events.pop_front().expect("over the count limit, so not empty");
            history.max_deleted = old;
            state.bytes -= payload.len() + EVENT_OVERHEAD;
            state.events -= 1;
        }
        let age_cutoff = now_ms.saturating_sub(self.limits.max_age.as_millis() as u64);
        self.evict_oldest(state, age_cutoff);
        if state.order.len() > 2 * state.events + 1024 {
            let channels = &state.channels;
            state.order.retain(|(channel, id)| is_kept(channels, channel, *id));
        }
        id
    }

    /// Drops events from the front of the publish order while over the byte cap or older
    /// than `age_cutoff`; a channel left with no events is forgotten.
    fn evict_oldest(&self, state: &mut State, age_cutoff: u64) {
        while let Some((channel, id)) = state.order.front() {
            let over = state.bytes > self.byte_cap || id.ms < age_cutoff;
            let stale = !is_kept(&state.channels, channel, *id);
            if !over && !stale {
                break;
            }
            let (channel, id) = state.order.pop_front().expect("front exists");
            if stale {
                continue;
            }
            let history = state.channels.get_mut(&channel).expect("is_kept found it");
            let (_, payload) = history.events.pop_front().expect("is_kept found the event");
            history.max_deleted = id;
            state.bytes -= payload.len() + EVENT_OVERHEAD;
            state.events -= 1;
            if history.events.is_empty() {
                state.channels.remove(&channel);
            }
        }
    }

    /// The events of `channel` after `since`, within `limit`.
    pub fn read_after(&self, channel: &ChannelName, since: EventId, limit: PageLimit) -> Read {
        let state = lock(&self.state);
        let Some(history) = state.channels.get(channel) else { return Read::NoStream };
        let start = history.events.partition_point(|(id, _)| *id <= since);
        let mut bytes = 0;
        let entries = history
            .events
            .range(start..)
            .take(limit.events)
            .take_while(|(_, payload)| {
                let first = bytes == 0;
                bytes += payload.len().max(1);
                first || bytes <= limit.bytes
            })
            .cloned()
            .collect();
        Read::Page(Page { entries, last_id: history.last_id, max_deleted: history.max_deleted })
    }

    /// Bytes held (payloads plus per-event overhead).
    pub fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}

/// True when `id` is still the oldest kept event of `channel` or later (i.e. not trimmed).
fn is_kept(channels: &HashMap<ChannelName, ChannelHistory>, channel: &ChannelName, id: EventId) -> bool {
    channels.get(channel).and_then(|h| h.events.front()).is_some_and(|(front, _)| *front <= id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn name(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    fn page(read: Read) -> Page {
        match read {
            Read::Page(page) => page,
            Read::NoStream | Read::Unreadable(_) => panic!("expected a page"),
        }
    }

    /// A page limit by count only.
    fn count(events: usize) -> PageLimit {
        PageLimit { events, bytes: usize::MAX }
    }

    /// The byte limit stops a page early, but a page always holds at least one event, however
    /// large; `may_have_more` tells the reader to go on.
    #[test]
    fn pages_are_bounded_in_bytes() {
        let history = MemoryHistory::new(limits(100), 1 << 20);
        let c = name("c");
        for _ in 0..10 {
            history.append(&c, Bytes::from(vec![b'x'; 1000]), 1000);
        }
        let first = page(history.read_after(&c, EventId::default(), PageLimit { events: 100, bytes: 2500 }));
        assert_eq!(first.entries.len(), 2, "2 × 1000 bytes fit in 2500, a third does not");
        assert!(first.may_have_more());
        let huge = page(history.read_after(&c, EventId::default(), PageLimit { events: 100, bytes: 10 }));
        assert_eq!(huge.entries.len(), 1, "one event even when it alone passes the limit");
        let last = first.entries[1].0;
        let rest = page(history.read_after(&c, last, count(100)));
        assert_eq!(rest.entries.len(), 8);
        assert!(!rest.may_have_more());
    }

    fn limits(max_events: u64) -> HistoryLimits {
        HistoryLimits { max_events, max_age: Duration::from_secs(60) }
    }

    /// Reads page after an id; the count limit trims the oldest and records what it trimmed.
    #[test]
    fn pages_and_count_limit() {
        let history = MemoryHistory::new(limits(3), 1 << 20);
        let c = name("c");
        let ids: Vec<EventId> = (0..5).map(|i| history.append(&c, Bytes::from(format!("{i}")), 1000)).collect();
        assert_eq!(ids[1], EventId::new(1000, 1), "same millisecond: next sequence");
        let all = page(history.read_after(&c, EventId::default(), count(10)));
        assert_eq!(all.entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[2..]);
        assert_eq!(all.max_deleted, ids[1]);
        assert_eq!(all.last_id, ids[4]);
        let after = page(history.read_after(&c, ids[2], count(1)));
        assert_eq!(after.entries, vec![(ids[3], Bytes::from("3"))]);
        assert_eq!(history.read_after(&name("other"), EventId::default(), count(10)), Read::NoStream);
        let fresh = page(history.read_after(&name("c"), EventId::default(), count(1)));
        assert!(fresh.max_deleted >= ids[0], "what came before the first event counts as deleted");
    }

    /// The byte cap evicts the oldest events of any channel, and forgets emptied channels.
    #[test]
    fn byte_cap_evicts_oldest_across_channels() {
        let per_event = 100 + EVENT_OVERHEAD;
        let history = MemoryHistory::new(limits(1000), 3 * per_event);
        let (a, b) = (name("a"), name("b"));
        history.append(&a, Bytes::from(vec![0; 100]), 1);
        history.append(&b, Bytes::from(vec![0; 100]), 2);
        history.append(&b, Bytes::from(vec![0; 100]), 3);
        assert_eq!(history.bytes(), 3 * per_event);
        history.append(&b, Bytes::from(vec![0; 100]), 4);
        assert_eq!(history.bytes(), 3 * per_event);
        assert_eq!(history.read_after(&a, EventId::default(), count(10)), Read::NoStream, "a's only event went first");
        assert_eq!(page(history.read_after(&b, EventId::default(), count(10))).entries.len(), 3);
    }

    /// Events older than the age limit go, even on channels nobody publishes to any more.
    #[test]
    fn age_limit_applies_to_idle_channels() {
        let history = MemoryHistory::new(limits(1000), 1 << 20);
        history.append(&name("idle"), Bytes::from("x"), 1_000);
        history.append(&name("busy"), Bytes::from("y"), 1_000 + 59_000);
        assert!(matches!(history.read_after(&name("idle"), EventId::default(), count(1)), Read::Page(_)));
        history.append(&name("busy"), Bytes::from("z"), 1_000 + 61_000);
        assert_eq!(history.read_after(&name("idle"), EventId::default(), count(1)), Read::NoStream);
    }

    /// Trimming by count leaves stale order entries; they are compacted, so memory stays flat.
    #[test]
    fn order_stays_bounded_under_count_trimming() {
        let history = MemoryHistory::new(limits(2), 1 << 30);
        for i in 0..10_000u64 {
            history.append(&name("c"), Bytes::from("x"), 1_000 + i);
        }
        let state = lock(&history.state);
        assert_eq!(state.events, 2);
        assert!(state.order.len() <= 2 * state.events + 1024 + 1, "{}", state.order.len());
    }
}
