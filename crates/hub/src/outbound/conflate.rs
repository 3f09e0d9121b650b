//! Conflation: how a queue of a lagging client makes room by keeping only the newest queued
//! event of each conflated channel and announcing the rest with one `skipped` notice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::event::{Event, EventKind, Skip};
use super::State;
use crate::protocol::{self, ChannelName};

/// Conflates the queue before an event of `incoming` is added: every queued delivery of a
/// conflated channel that is not its channel's newest (and every queued one of `incoming`,
/// which the new event supersedes) is dropped, and each channel's drops are announced by one
/// `skipped` notice just before what replaces them (merged with an earlier notice still
/// queued). A frame already partly written stays first and whole: it is on its way. Returns
/// the bytes freed.
pub(super) fn conflate(state: &mut State, incoming: &ChannelName) -> usize {
    let before = state.bytes;
    let begun = if state.front_written > 0 { state.frames.pop_front() } else { None };
    if let Some(begun) = &begun {
        state.bytes -= begun.frame.len();
    }
    conflate_unbegun(state, incoming);
    if let Some(begun) = begun {
        state.bytes += begun.frame.len();
        state.frames.push_front(begun);
    }
    before.saturating_sub(state.bytes)
}

/// [`conflate`] for a queue of which nothing was written yet.
fn conflate_unbegun(state: &mut State, incoming: &ChannelName) {
    // The newest queued delivery of each conflated channel survives, unless `incoming` replaces it.
    let mut newest: Vec<(&ChannelName, usize)> = Vec::new();
    for (at, event) in state.frames.iter().enumerate() {
        if let EventKind::Delivery { channel, conflate: true, .. } = &event.kind {
            match newest.iter_mut().find(|(c, _)| *c == channel) {
                Some(slot) => slot.1 = at,
                None => newest.push((channel, at)),
            }
        }
    }
    let survivors: Vec<usize> = newest.iter().filter(|(c, _)| *c != incoming).map(|(_, at)| *at).collect();
    let mut skips: Vec<Skip> = Vec::new();
    let mut kept: VecDeque<Arc<Event>> = VecDeque::with_capacity(state.frames.len());
    let mut bytes = 0;
    for (at, event) in std::mem::take(&mut state.frames).into_iter().enumerate() {
        let Some(channel) = event.conflated_channel() else {
            bytes += event.frame.len();
            kept.push_back(event);
            continue;
        };
        if survivors.contains(&at) {
            if let Some(i) = skips.iter().position(|s| &s.channel == channel) {
                let notice = skip_notice(skips.swap_remove(i));
                bytes += notice.frame.len();
                kept.push_back(notice);
            }
            bytes += event.frame.len();
            kept.push_back(event);
            continue;
        }
        let (count, from, to) = match &event.kind {
            EventKind::Delivery { id, .. } => (1, *id, *id),
            EventKind::Skipped(skip) => (skip.count, skip.from, skip.to),
            EventKind::Control => unreachable!("control frames have no conflated channel"),
        };
        match skips.iter_mut().find(|s| &s.channel == channel) {
            Some(skip) => {
                skip.count += count;
                skip.from = skip.from.min(from);
                skip.to = skip.to.max(to);
            }
            None => skips.push(Skip { channel: channel.clone(), count, from, to }),
        }
    }
    // What is left announces drops of `incoming` (or of channels whose only queued item was a
    // notice): it goes last, just before the incoming event.
    for skip in skips {
        let notice = skip_notice(skip);
        bytes += notice.frame.len();
        kept.push_back(notice);
    }
    state.frames = kept;
    state.bytes = bytes;
}

fn skip_notice(skip: Skip) -> Arc<Event> {
    let frame = protocol::encode_skipped(&skip.channel, skip.count, skip.from, skip.to);
    Arc::new(Event { frame, received_at: Instant::now(), kind: EventKind::Skipped(skip) })
}
