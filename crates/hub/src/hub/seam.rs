//! The seam between a history replay and live delivery: a pure state machine, no locks, no I/O.
//!
//! One [`Seam`] serves a resuming subscription (`crate::recovery` replays the client's missed
//! events) and a whole channel catching up after its source reconnected. While the replay runs,
//! live events are held (with their history ids); when the replay ends at `replayed_to`, the
//! held events newer than it are handed over and delivery goes live. History can also be
//! *ahead* of live delivery (an event already in the stream whose live message has not reached
//! this hub yet): then live events up to `replayed_to` are skipped until the first newer one.
//!
//! The promise, checked by the property test below: replay + hand-over + live delivers every id
//! after the client's once, in order, for any interleaving of publishes, live arrivals, history
//! reads and the end of the replay (including held events overflowing the cap).

use std::sync::Arc;

use crate::event_id::EventId;
use crate::outbound::Event;

/// What one held event costs beyond its frame (which is shared with every other queue): its
/// slot in the seam. Counted, so that many small held events cannot escape the bound.
pub(super) const HELD_SLOT: usize = std::mem::size_of::<(Option<EventId>, Arc<Event>)>();

/// Live events held back for a replay, and where the replay ended.
#[derive(Default)]
pub(super) struct Seam {
    /// Live events held back, with their history id (`None`: never in history).
    held: Vec<(Option<EventId>, Arc<Event>)>,
    /// What the held events cost ([`Seam::cost`] each): what a cap bounds, and what a resuming
    /// subscription charges its client's queue for.
    bytes: usize,
    /// More was held than allowed and all of it dropped: history has it, read further.
    overflowed: bool,
    /// The replay ended ahead of live delivery at this id.
    live_after: Option<EventId>,
}

/// What a live event means to a [`Seam`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LiveEvent {
    /// The replay is still running: hold it.
    Hold,
    /// Replayed already: drop it.
    Skip,
    /// Past the replay: deliver it, and from now on everything.
    GoLive,
}

/// How a replay ends at a [`Seam`].
pub(super) struct SeamEnd {
    /// Held events newer than the replay, in order, to deliver now.
    pub hand_over: Vec<(Option<EventId>, Arc<Event>)>,
    /// What the held events cost (no longer held: give it back).
    pub released: usize,
    /// Whether later live events need no check (else the seam waits with `live_after`).
    pub live: bool,
}

impl Seam {
    /// What to do with a live event with history id `id`.
    pub fn on_live(&self, id: Option<EventId>) -> LiveEvent {
        match self.live_after {
            None => LiveEvent::Hold,
            Some(after) if id.is_some_and(|id| id <= after) => LiveEvent::Skip,
            Some(_) => LiveEvent::GoLive,
        }
    }

    /// What holding `event` costs: its frame and its slot.
    pub fn cost(event: &Event) -> usize {
        event.frame.len() + HELD_SLOT
    }

    /// True once held events were dropped; until the replay ends, later ones are not held
    /// either (history has them all).
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// What the held events cost.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds a live event (its cost already reserved by the caller, if it charges anyone).
    pub fn hold(&mut self, id: Option<EventId>, event: &Arc<Event>) {
        if self.overflowed {
            return;
        }
        self.bytes += Self::cost(event);
        self.held.push((id, Arc::clone(event)));
    }

    /// Drops everything held (history has it): the replay must read further before it ends.
    /// Returns what the dropped events cost, for the caller to give back.
    pub fn overflow(&mut self) -> usize {
        let freed = self.bytes;
        *self = Seam { overflowed: true, ..Seam::default() };
        freed
    }

    /// Holds a live event while the seam costs at most `cap`; past it, overflows.
    pub fn hold_within(&mut self, id: Option<EventId>, event: &Arc<Event>, cap: usize) {
        if self.overflowed {
            return;
        }
        if self.bytes + Self::cost(event) > cap {
            self.overflow();
        } else {
            self.hold(id, event);
        }
    }

    /// Ends a replay that reached `replayed_to`; `None` when held events were dropped and
    /// history must be read further first.
    pub fn finish(&mut self, replayed_to: EventId) -> Option<SeamEnd> {
        if std::mem::take(&mut self.overflowed) {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        let released = std::mem::take(&mut self.bytes);
        let newest_held = held.iter().filter_map(|(id, _)| *id).max();
        // Events without a history id were never in history: they go out as they came.
        let hand_over: Vec<_> = held.into_iter().filter(|(id, _)| id.is_none_or(|id| id > replayed_to)).collect();
        let live = newest_held.is_some_and(|newest| newest >= replayed_to);
        if !live {
            self.live_after = Some(replayed_to);
        }
        Some(SeamEnd { hand_over, released, live })
    }

    /// Gives up the replay: everything held, in order (the abandoned catch-up sends it as is).
    pub fn into_held(self) -> Vec<(Option<EventId>, Arc<Event>)> {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChannelName;
    use mt_testkit::Rng;

    fn event(ms: u64, bytes: usize) -> Arc<Event> {
        let channel = ChannelName::new("x").unwrap();
        Event::delivery(vec![b'e'; bytes].into(), std::time::Instant::now(), channel, EventId::new(ms, 0), false)
    }

    /// Where the simulated subscription is.
    #[derive(Debug, PartialEq)]
    enum Phase {
        /// Replaying history; live events go through `on_live` (they are held).
        Replaying,
        /// The replay ended ahead of live delivery: live events go through `on_live`.
        Seamed,
        /// Every live event is delivered.
        Live,
    }

    /// Replay + hand-over + live delivers each id after `since` exactly once, in order, for
    /// random interleavings of: a publish (appended to history), the live arrival of the next
    /// published event (never ahead of history), a history read (a page from the cursor), and
    /// the end of the replay (only after a read reached the end of history, as
    /// `crate::recovery` does), with a hold cap small enough to overflow.
    #[test]
    fn replay_and_live_deliver_each_id_once_in_order() {
        let mut rng = Rng::from_env("seam interleavings", 0x5EA4);
        for case in 0..2000 {
            let total = 1 + rng.below(40);
            // Events 1..=published are in history; 1..=arrived have arrived live (arrived ≤
            // published: the publish script appends before it publishes).
            let mut published = rng.below(total + 1);
            let mut arrived = rng.below(published + 1);
            let since = rng.below(published + 1);
            let page = 1 + rng.below(8);
            let cap = (10 + HELD_SLOT) * (1 + rng.below(6)) as usize; // each event costs 10 + its slot
            let mut seam = Seam::default();
            let mut phase = Phase::Replaying;
            let mut cursor = since;
            let mut read_to_end = false;
            let mut delivered: Vec<u64> = Vec::new();
            let mut steps = 0;
            // Done when every event has arrived and the replay has ended (a seamed subscription
            // whose remaining live events were all replayed stays seamed until a newer one).
            while !(arrived == total && phase != Phase::Replaying) {
                steps += 1;
                assert!(steps < 100_000, "case {case}: no progress");
                match rng.below(4) {
                    0 if published < total => published += 1,
                    1 if arrived < published => {
                        arrived += 1;
                        let id = Some(EventId::new(arrived, 0));
                        match phase {
                            Phase::Live => delivered.push(arrived),
                            Phase::Replaying | Phase::Seamed => match seam.on_live(id) {
                                LiveEvent::Hold => seam.hold_within(id, &event(arrived, 10), cap),
                                LiveEvent::Skip => {}
                                LiveEvent::GoLive => {
                                    delivered.push(arrived);
                                    phase = Phase::Live;
                                }
                            },
                        }
                    }
                    2 if phase == Phase::Replaying => {
                        let to = (cursor + page).min(published);
                        delivered.extend(cursor + 1..=to);
                        cursor = to;
                        read_to_end = to == published;
                    }
                    3 if phase == Phase::Replaying && read_to_end => match seam.finish(EventId::new(cursor, 0)) {
                        None => read_to_end = false,
                        Some(end) => {
                            delivered.extend(end.hand_over.iter().map(|(id, _)| id.unwrap().ms));
                            phase = if end.live { Phase::Live } else { Phase::Seamed };
                        }
                    },
                    _ => {}
                }
            }
            let expected: Vec<u64> = (since + 1..=total).collect();
            assert_eq!(delivered, expected, "case {case}: since {since}, page {page}, cap {cap}");
        }
    }

    /// Held events newer than the replay are handed over in order; older ones are dropped; a
    /// replay ahead of live skips the live copies it already sent.
    #[test]
    fn finish_hands_over_newer_and_skips_replayed() {
        let mut seam = Seam::default();
        for ms in 1..=3 {
            assert_eq!(seam.on_live(Some(EventId::new(ms, 0))), LiveEvent::Hold);
            seam.hold_within(Some(EventId::new(ms, 0)), &event(ms, 10), 1000);
        }
        let end = seam.finish(EventId::new(2, 0)).unwrap();
        assert!(end.live);
        assert_eq!(end.hand_over.len(), 1);

        let mut ahead = Seam::default();
        let end = ahead.finish(EventId::new(7, 0)).unwrap();
        assert!(!end.live && end.hand_over.is_empty());
        assert_eq!(ahead.on_live(Some(EventId::new(7, 0))), LiveEvent::Skip);
        assert_eq!(ahead.on_live(Some(EventId::new(8, 0))), LiveEvent::GoLive);
    }

    /// Past the cap everything held is dropped and the replay must read further.
    #[test]
    fn overflow_asks_for_more() {
        let mut seam = Seam::default();
        for ms in 1..=4 {
            seam.hold_within(Some(EventId::new(ms, 0)), &event(ms, 10), 2 * (10 + HELD_SLOT) + 5);
        }
        assert!(seam.finish(EventId::new(0, 0)).is_none());
        assert!(seam.finish(EventId::new(4, 0)).is_some_and(|end| end.hand_over.is_empty()));
    }
}
