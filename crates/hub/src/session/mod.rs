//! One WebSocket connection after the upgrade: a reader task and a writer, and the one rule for
//! when the connection ends.
//!
//! - The **reader** (its own task, so a partly read frame is never dropped by a `select!`)
//!   reads client frames ([`crate::inbound`]), applies subscribe/unsubscribe, answers pings, and on a bad frame
//!   either answers with an `error` message or, for protocol-level faults, marks the
//!   connection for closing.
//! - The **writer** ([`writer`], the session task itself) drains the outbound queue in batches
//!   and writes each batch with vectored writes, sends jittered pings, and enforces the
//!   heartbeat timeout ([`heartbeat`]).
//!
//! **The rule:** the connection ends when its outbound queue is marked closed (by the reader,
//! a slow-consumer push, the heartbeat, or the drain). The writer then finishes the frame it
//! was in the middle of, sends the `closing` notice with the last event id it wrote per
//! channel when the close is one that sends it ([`crate::close::Close::sends_closing_notice`]), writes the close frame (all bounded by
//! [`CLOSE_WRITE_TIMEOUT`]), shuts the socket, gives the reader [`CLOSE_READ_GRACE`] to see the
//! peer's answer, and cleans up.
//!
//! A `subscribe` with `since` (or `?since=`) starts a resume task (`crate::recovery`) for the
//! channels that keep history; the others are answered at once with `recovered: false`.
//!
//! Which channels a connection may read is its token's business ([`auth`]): a channel it has
//! no grant for gets a `forbidden` error instead of a subscription.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::auth::Access;
use crate::event_id::EventId;
use crate::hub::{Client, Hub};
use crate::inbound::{ClientFrame, FrameReader, ReadError};
use crate::outbound::{Close, Event};
use crate::protocol::{self, ChannelName, ClientMessage, ConnectQuery, RequestError, ResumeFailure};
use crate::recovery::Recovery;
use crate::shutdown::Shutdown;
use crate::wire;

pub mod auth;
pub mod heartbeat;
pub mod rate_limit;
pub mod writer;

use auth::ConnectionAuth;
use writer::write_loop;

/// Longest the writer tries to get the final frames out to a peer that does not read.
pub const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the reader may wait for the peer's close answer after ours went out.
pub const CLOSE_READ_GRACE: Duration = Duration::from_secs(2);
/// Bad requests a connection may make before it is closed with 1008.
pub const MAX_BAD_REQUESTS: u32 = 32;

/// What every connection needs from the rest of the hub: one set per process, cloned into each
/// connection (the fields of mini-redis's `Handler`).
#[derive(Clone)]
pub struct Services {
    pub hub: Arc<Hub>,
    /// Runs resumes; a connection's resume task is spawned on `shutdown`'s tracker.
    pub recovery: Arc<Recovery>,
    pub shutdown: Shutdown,
    /// Who may read which channel.
    pub access: Arc<Access>,
}

/// One connection: the services and the hub's view of this client. Shared by its reader task
/// (which applies requests) and its connect-time subscription.
struct Connection {
    services: Services,
    client: Arc<Client>,
    /// Its token and the deadlines that come with it (the writer keeps the clock).
    auth: Arc<ConnectionAuth>,
}

/// Runs a connection to its end. `leftover` holds bytes hyper read past the upgrade request.
pub async fn run(services: Services, stream: TcpStream, leftover: Bytes, query: ConnectQuery) {
    let hub = Arc::clone(&services.hub);
    let client = hub.open_client();
    client.touch();
    let auth = Arc::new(ConnectionAuth::default());
    let connection = Connection { services, client: Arc::clone(&client), auth: Arc::clone(&auth) };
    if let Some(token) = &query.token {
        connection.authenticate(token);
    }
    // With a refused token the connection is already closing: nothing is subscribed.
    let channels = connection.hold_for_token(&query.channels, query.since);
    if !channels.is_empty() && client.outbound.close_reason().is_none() {
        let since: Vec<(ChannelName, EventId)> = match query.since {
            Some(id) => channels.iter().map(|c| (c.clone(), id)).collect(),
            None => Vec::new(),
        };
        if let Err(error) = connection.subscribe(&channels, since) {
            connection.reject(&error);
        }
    }
    let (read_half, write_half) = stream.into_split();
    let reader_input = std::io::Cursor::new(leftover).chain(read_half);
    let shutdown = connection.services.shutdown.clone();
    let reader = shutdown.spawn(read_loop(connection, reader_input));

    let cause = write_loop(&hub, &client, &auth, write_half, reader).await;
    hub.close_client(&client);
    hub.metrics.closed(cause);
    tracing::debug!(client = client.id.0, cause = cause.as_str(), "connection closed");
}

impl Connection {
    /// Subscribes, queues the `subscribed` reply, and starts resuming the channels in `since`
    /// (used at connect time and by the reader). A channel without history is subscribed live
    /// and told at once that it cannot be resumed. A channel the connection may not read gets a
    /// `forbidden` error and is left out.
    fn subscribe(&self, channels: &[ChannelName], since: Vec<(ChannelName, EventId)>) -> Result<(), RequestError> {
        let Services { hub, recovery, shutdown, .. } = &self.services;
        let client = &self.client;
        let allowed = self.refuse_forbidden(channels);
        if allowed.is_empty() {
            return Ok(());
        }
        let channels = &allowed[..];
        let since: Vec<(ChannelName, EventId)> =
            since.into_iter().filter(|(channel, _)| channels.contains(channel)).collect();
        let (resumable, unresumable): (Vec<_>, Vec<_>) =
            since.into_iter().partition(|(channel, _)| hub.policies().keeps_history(channel));
        let resume: Vec<ChannelName> = resumable.iter().map(|(channel, _)| channel.clone()).collect();
        let recovering = hub.subscribe(client, channels, &resume)?;
        client.outbound.push(&Event::control(protocol::encode_subscribed(channels)));
        for (channel, id) in unresumable {
            let outcome = Err(ResumeFailure::NoHistory);
            client.outbound.push(&Event::control(protocol::encode_recovered(&channel, id, 0, outcome)));
            hub.metrics.resumed(outcome);
        }
        let requests: Vec<(ChannelName, EventId)> =
            resumable.into_iter().filter(|(channel, _)| recovering.contains(channel)).collect();
        if !requests.is_empty() {
            shutdown.spawn(Arc::clone(recovery).run(Arc::clone(hub), Arc::clone(client), requests));
        }
        Ok(())
    }

    /// Answers a bad request with an `error` message.
    fn reject(&self, error: &RequestError) {
        self.services.hub.metrics.client_errors.inc();
        self.client.outbound.push(&Event::control(protocol::encode_error(error)));
    }
}

// ---------------------------------------------------------------------------------------------
// Reader

async fn read_loop<R: AsyncRead + Unpin>(connection: Connection, input: R) {
    let Connection { services, client, .. } = &connection;
    let hub = &services.hub;
    let mut frames = FrameReader::new(input);
    let mut bad_requests = 0u32;
    let mut ops = rate_limit::OpBudget::new(std::time::Instant::now());
    loop {
        let frame = match frames.next().await {
            Ok(frame) => frame,
            Err(error) => {
                client.outbound.close(close_for_read_error(&error));
                return;
            }
        };
        client.touch();
        let outcome = match frame {
            ClientFrame::Text(text) => match ClientMessage::parse(&text) {
                Ok(_) if !ops.take(std::time::Instant::now()) => {
                    Err(RequestError::RateLimited { per_second: rate_limit::PER_SECOND })
                }
                Ok(ClientMessage::Subscribe { channels, since }) => connection.subscribe(&channels, since),
                Ok(ClientMessage::Auth(token)) => {
                    connection.authenticate(&token);
                    Ok(())
                }
                Ok(ClientMessage::Unsubscribe(channels)) => {
                    hub.unsubscribe(client, &channels);
                    client.outbound.push(&Event::control(protocol::encode_unsubscribed(&channels)));
                    Ok(())
                }
                Err(error) => Err(error),
            },
            ClientFrame::Binary => Err(RequestError::Binary),
            ClientFrame::Ping(payload) => {
                client.outbound.push(&Event::control(wire::frame(wire::OPCODE_PONG, &payload)));
                Ok(())
            }
            ClientFrame::Pong => Ok(()),
            ClientFrame::Close(code) => {
                client.outbound.close(Close::echo(code));
                return;
            }
        };
        if let Err(error) = outcome {
            bad_requests += 1;
            connection.reject(&error);
            if bad_requests > MAX_BAD_REQUESTS {
                // The error replies that explain the close go out before it.
                client.outbound.close_after_queued(Close::TooManyBadRequests);
                return;
            }
        }
    }
}

fn close_for_read_error(error: &ReadError) -> Close {
    match error {
        ReadError::TooBig => Close::MessageTooBig,
        ReadError::InvalidUtf8 => Close::InvalidUtf8,
        ReadError::Eof | ReadError::Io(_) => Close::PeerGone,
        ReadError::Protocol(what) => Close::ProtocolViolation(what),
    }
}
