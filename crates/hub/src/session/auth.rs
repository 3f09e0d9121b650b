//! A connection's token: the `?token=` of the upgrade or the `auth` message, the grants it
//! carries, and the clock it runs on.
//!
//! - A connection without a token reads public channels only. Channels it asked for in the
//!   upgrade query that need a grant wait (unsubscribed) for its first `auth` message; so does
//!   every connection when no channel is public. Without a token within
//!   [`AUTH_DEADLINE`] (10 s) it is closed with `4001`.
//! - A refused token closes the connection with `4001` and a reason naming the failed check.
//! - [`EXPIRY_NOTICE`] before `exp` the client gets `token_expiring`; an `auth` message with a
//!   fresh token (same `sub`) extends the connection, and channels its new grants no longer
//!   cover are unsubscribed with a notice. At `exp` it gets the `closing` notice with its last
//!   ids, then `4001`, and resumes once it has a new token.
//!
//! The writer task keeps the clock ([`ConnectionAuth::next_deadline`] is one of the instants it
//! sleeps until); the reader applies tokens. Grants are checked when subscribing, never on the
//! fan-out path.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Connection;
use crate::auth::{Access, AuthFailure, Identity, Token};
use crate::event_id::EventId;
use crate::hub::Client;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::outbound::{Close, Event};
use crate::protocol::{self, ChannelName, RequestError};

/// How long a connection that needs a token may go without one.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// How long before `exp` the client is told to refresh.
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(30);

/// The token state of one connection, shared by its reader and writer.
#[derive(Default)]
pub(super) struct ConnectionAuth {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    identity: Option<Identity>,
    /// Close with 4001 at this instant unless a token came.
    token_due: Option<Instant>,
    /// Send `token_expiring` at this instant (cleared once sent).
    notice_at: Option<Instant>,
    /// The token's `exp`.
    expires_at: Option<Instant>,
    /// Connect-time channels waiting for a token (with their resume id, if any).
    waiting: Vec<(ChannelName, Option<EventId>)>,
}

impl ConnectionAuth {
    /// The next instant the writer must call [`ConnectionAuth::on_deadline`] at, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let state = lock(&self.state);
        [state.token_due, state.notice_at, state.expires_at].into_iter().flatten().min()
    }

    /// Acts on the deadlines that have passed: closes a connection whose token is overdue or
    /// expired, or tells the client its token is expiring.
    pub fn on_deadline(&self, client: &Client, metrics: &Metrics) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        if state.token_due.is_some_and(|due| due <= now) {
            state.token_due = None;
            metrics.auth_failed(AuthFailure::Missing);
            client.outbound.close(Close::Unauthorized(AuthFailure::Missing));
        } else if state.expires_at.is_some_and(|exp| exp <= now) {
            state.expires_at = None;
            state.notice_at = None;
            metrics.auth_failed(AuthFailure::Expired);
            client.outbound.close(Close::Unauthorized(AuthFailure::Expired));
        } else if state.notice_at.is_some_and(|at| at <= now) {
            state.notice_at = None;
            let left = state.expires_at.map_or(0, |exp| exp.saturating_duration_since(now).as_secs_f64().ceil() as u64);
            client.outbound.push(&Event::control(protocol::encode_token_expiring(left)));
        }
    }
}

impl Connection {
    /// Splits `channels` into those this connection may read now and those it may not (the
    /// token state is locked once for all of them).
    fn partition_readable(&self, channels: Vec<ChannelName>) -> (Vec<ChannelName>, Vec<ChannelName>) {
        match &*self.services.access {
            Access::Open => (channels, Vec::new()),
            access => {
                let state = lock(&self.auth.state);
                channels.into_iter().partition(|channel| access.allows(state.identity.as_ref(), channel))
            }
        }
    }

    /// Splits a subscribe into the channels this connection may read and the ones it may not;
    /// each refused one gets a `forbidden` error (not a close) and is counted.
    pub(super) fn refuse_forbidden(&self, channels: &[ChannelName]) -> Vec<ChannelName> {
        let (allowed, forbidden) = self.partition_readable(channels.to_vec());
        for channel in forbidden {
            self.services.hub.metrics.forbidden_subscribes.inc();
            self.client.outbound.push(&Event::control(protocol::encode_error(&RequestError::Forbidden(channel))));
        }
        allowed
    }

    /// At connect time: of the query's channels, those that need a grant the connection does
    /// not have yet wait for a token (when it has none), and the connection gets its deadline.
    /// Returns the channels to subscribe now.
    pub(super) fn hold_for_token(&self, channels: &[ChannelName], since: Option<EventId>) -> Vec<ChannelName> {
        let access = &*self.services.access;
        if access.is_open() {
            return channels.to_vec();
        }
        let mut state = lock(&self.auth.state);
        if state.identity.is_some() {
            return channels.to_vec();
        }
        let (now, waiting): (Vec<ChannelName>, Vec<ChannelName>) =
            channels.iter().cloned().partition(|channel| access.allows(None, channel));
        state.waiting = waiting.into_iter().map(|channel| (channel, since)).collect();
        if !state.waiting.is_empty() || !access.has_public_channels() {
            state.token_due = Some(Instant::now() + AUTH_DEADLINE);
        }
        now
    }

    /// Applies a token (from the query or an `auth` message). On success replies
    /// `authenticated`, unsubscribes what the new grants no longer cover, and subscribes the
    /// channels that waited for a token. A refused token closes the connection with 4001.
    pub(super) fn authenticate(&self, token: &Token) {
        let Connection { services, client, .. } = self;
        let hub = &services.hub;
        let Access::Enforced { verifier, .. } = &*services.access else {
            client.outbound.push(&Event::control(protocol::encode_authenticated(None)));
            return;
        };
        let verified =
            verifier.verify(token, SystemTime::now()).and_then(|identity| match &lock(&self.auth.state).identity {
                Some(current) if current.subject != identity.subject => Err(AuthFailure::SubjectChanged),
                _ => Ok(identity),
            });
        let identity = match verified {
            Ok(identity) => identity,
            Err(failure) => {
                tracing::debug!(client = client.id.0, reason = failure.as_str(), "token refused");
                hub.metrics.auth_failed(failure);
                client.outbound.close(Close::Unauthorized(failure));
                return;
            }
        };
        hub.metrics.tokens_verified.inc();
        let left = identity.expires_at.duration_since(SystemTime::now()).unwrap_or_default();
        tracing::debug!(client = client.id.0, sub = %identity.subject, expires_in = left.as_secs(), "token accepted");
        let reply = protocol::encode_authenticated(Some((&identity.subject, left.as_secs())));
        // The deadlines are in place before the reply is queued: queuing wakes the writer,
        // which then reads them (the other order let it go back to sleep on the old ones).
        let waiting = {
            let mut state = lock(&self.auth.state);
            let now = Instant::now();
            state.expires_at = Some(now + left);
            state.notice_at = Some((now + left).checked_sub(EXPIRY_NOTICE).unwrap_or(now).max(now));
            state.token_due = None;
            state.identity = Some(identity);
            std::mem::take(&mut state.waiting)
        };
        client.outbound.push(&Event::control(reply));
        let (_, revoked) = self.partition_readable(client.channels());
        if !revoked.is_empty() {
            hub.unsubscribe(client, &revoked);
            client.outbound.push(&Event::control(protocol::encode_revoked(&revoked)));
        }
        if !waiting.is_empty() {
            let channels: Vec<ChannelName> = waiting.iter().map(|(channel, _)| channel.clone()).collect();
            let since = waiting.into_iter().filter_map(|(channel, id)| Some((channel, id?))).collect();
            if let Err(error) = self.subscribe(&channels, since) {
                self.reject(&error);
            }
        }
    }
}
