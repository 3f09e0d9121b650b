//! Every way a connection ends, in one catalogue: the close code and reason text the peer
//! gets, the `reason` label of `mt_stream_connections_closed_total`, and whether a `closing`
//! notice (the last id written per channel) goes out first.
//!
//! To add a close: add a variant to [`Close`]; the compiler then points at every `match` here
//! that must say its code, reason, label and notice, and nowhere else needs to change. The user
//! side of this table is `docs/protocol.md` ("Close codes"); keep the two together.

use bytes::Bytes;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::auth::AuthFailure;
use crate::wire;

/// Why the hub closes a connection. The first close asked for wins (see
/// [`crate::outbound::Outbound::close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// The peer sent a close frame: its code is echoed (see [`Close::echo`]).
    PeerClosed { code: u16 },
    /// The peer's stream ended (or failed) without a close frame.
    PeerGone,
    /// Shutdown drain (1001).
    Drain,
    /// The client's outbound queue passed its byte cap, or its resume cannot keep up (4008).
    SlowConsumer,
    /// The client answered no ping within a heartbeat interval (4000).
    HeartbeatTimeout,
    /// A WebSocket protocol violation (1002), with what was wrong.
    ProtocolViolation(&'static str),
    /// A client message over the size limit (1009).
    MessageTooBig,
    /// A text message that is not UTF-8 (1007).
    InvalidUtf8,
    /// More bad requests than [`crate::session::MAX_BAD_REQUESTS`] (1008).
    TooManyBadRequests,
    /// The hub fell behind its event source and lost events of a channel that keeps no history
    /// (1013, try again later): the client reconnects and refetches instead of living with a
    /// silent hole.
    SourceLagged,
    /// A token was refused, none came in time, or the connection's token expired (4001): the
    /// reason says which check failed, never the token.
    Unauthorized(AuthFailure),
}

impl Close {
    /// Our answer to the peer's close frame: its code echoed, 1000 when it gave none, 1002 for
    /// a code a peer may not send (RFC 6455 §7.4).
    pub fn echo(code: Option<u16>) -> Self {
        let code = match code {
            None => 1000,
            Some(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => code,
            Some(_) => 1002,
        };
        Self::PeerClosed { code }
    }

    /// The close code sent to the peer.
    pub fn code(self) -> u16 {
        match self {
            Self::PeerClosed { code } => code,
            Self::PeerGone => 1000,
            Self::Drain => 1001,
            Self::ProtocolViolation(_) => 1002,
            Self::InvalidUtf8 => 1007,
            Self::TooManyBadRequests => 1008,
            Self::MessageTooBig => 1009,
            Self::SourceLagged => 1013,
            Self::HeartbeatTimeout => 4000,
            Self::SlowConsumer => 4008,
            Self::Unauthorized(_) => 4001,
        }
    }

    /// The reason text sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::PeerClosed { .. } | Self::PeerGone => "",
            Self::Drain => "server shutting down",
            Self::SlowConsumer => "slow consumer: queue over budget",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::ProtocolViolation(what) => what,
            Self::MessageTooBig => "message over 9 KiB",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::TooManyBadRequests => "too many bad requests",
            Self::SourceLagged => "events lost: the hub fell behind its source",
            Self::Unauthorized(failure) => failure.reason(),
        }
    }

    /// The metric label this close is counted under.
    pub fn metric_reason(self) -> CloseReason {
        match self {
            Self::PeerClosed { .. } | Self::PeerGone => CloseReason::Peer,
            Self::Drain => CloseReason::Drain,
            Self::SlowConsumer => CloseReason::SlowConsumer,
            Self::HeartbeatTimeout => CloseReason::HeartbeatTimeout,
            Self::ProtocolViolation(_) | Self::MessageTooBig | Self::InvalidUtf8 | Self::TooManyBadRequests => {
                CloseReason::ProtocolError
            }
            Self::SourceLagged => CloseReason::SourceLagged,
            Self::Unauthorized(_) => CloseReason::Unauthorized,
        }
    }

    /// Whether the client gets a `closing` notice (last id written per channel) before the
    /// close frame: for closes the client did not cause by breaking the protocol and after
    /// which it should resume (an expired token: resume once a fresh one is at hand).
    pub fn sends_closing_notice(self) -> bool {
        match self {
            Self::Drain | Self::SlowConsumer | Self::SourceLagged | Self::Unauthorized(AuthFailure::Expired) => true,
            Self::Unauthorized(_) => false,
            Self::PeerClosed { .. }
            | Self::PeerGone
            | Self::HeartbeatTimeout
            | Self::ProtocolViolation(_)
            | Self::MessageTooBig
            | Self::InvalidUtf8
            | Self::TooManyBadRequests => false,
        }
    }

    /// The close frame.
    pub fn frame(self) -> Bytes {
        wire::close_frame(self.code(), self.reason())
    }
}

/// Why a connection ended: the `reason` label of `mt_stream_connections_closed_total` (a closed
/// set: never a client id or a channel name).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or went away.
    Peer,
    /// Shutdown drain (1001).
    Drain,
    /// Slow consumer (4008).
    SlowConsumer,
    /// Heartbeat timeout (4000).
    HeartbeatTimeout,
    /// A protocol violation, oversized or invalid message, or repeated bad requests.
    ProtocolError,
    /// Writing to the socket failed (no close frame could be sent).
    IoError,
    /// The hub lost events of the client's channel to a lag behind its source (1013).
    SourceLagged,
    /// A refused or expired token (4001).
    Unauthorized,
}

impl CloseReason {
    /// Every label value, in the order `docs/metrics.md` lists them.
    pub const ALL: [Self; 8] = [
        Self::Peer,
        Self::Drain,
        Self::SlowConsumer,
        Self::HeartbeatTimeout,
        Self::ProtocolError,
        Self::IoError,
        Self::SourceLagged,
        Self::Unauthorized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Drain => "drain",
            Self::SlowConsumer => "slow_consumer",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::ProtocolError => "protocol_error",
            Self::IoError => "io_error",
            Self::SourceLagged => "source_lagged",
            Self::Unauthorized => "unauthorized",
        }
    }
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One close of each kind (a variant added to `Close` belongs here too).
    fn every_close() -> [Close; 20] {
        [
            Close::echo(None),
            Close::PeerGone,
            Close::Drain,
            Close::SlowConsumer,
            Close::HeartbeatTimeout,
            Close::ProtocolViolation("client frames must be masked"),
            Close::MessageTooBig,
            Close::InvalidUtf8,
            Close::TooManyBadRequests,
            Close::SourceLagged,
            Close::Unauthorized(AuthFailure::ALL[0]),
            Close::Unauthorized(AuthFailure::ALL[1]),
            Close::Unauthorized(AuthFailure::ALL[2]),
            Close::Unauthorized(AuthFailure::ALL[3]),
            Close::Unauthorized(AuthFailure::ALL[4]),
            Close::Unauthorized(AuthFailure::ALL[5]),
            Close::Unauthorized(AuthFailure::ALL[6]),
            Close::Unauthorized(AuthFailure::ALL[7]),
            Close::Unauthorized(AuthFailure::ALL[8]),
            Close::Unauthorized(AuthFailure::ALL[9]),
        ]
    }

    /// A peer's close code is echoed; codes it may not send become 1002.
    #[test]
    fn peer_close_codes() {
        assert_eq!(Close::echo(None).code(), 1000);
        assert_eq!(Close::echo(Some(4001)).code(), 4001);
        assert_eq!(Close::echo(Some(1005)).code(), 1002);
        assert_eq!(Close::echo(Some(1004)).code(), 1002);
    }

    /// Every close of the catalogue has its row in docs/protocol.md's close-code table, with the
    /// same code, reason text, notice and metric label.
    #[test]
    fn docs_list_every_close() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md"))
            .expect("docs/protocol.md is in the repository");
        let rows: Vec<Vec<&str>> = docs
            .lines()
            .filter(|line| line.starts_with("| 1") || line.starts_with("| 4"))
            .map(|line| line.split('|').map(str::trim).collect())
            .collect();
        for close in every_close() {
            let reason = if close.reason().is_empty() { "(empty)".to_owned() } else { format!("`{}`", close.reason()) };
            let row = rows
                .iter()
                .find(|cells| cells[1] == close.code().to_string() && cells[2].contains(&reason))
                .unwrap_or_else(|| panic!("docs/protocol.md has no row for {close:?} ({} {reason})", close.code()));
            let notice = if close.sends_closing_notice() { "**yes**" } else { "no" };
            assert_eq!(row[4], notice, "{close:?}: closing notice");
            assert_eq!(row[5], format!("`{}`", close.metric_reason().as_str()), "{close:?}: metric label");
        }
    }

    /// Codes and reasons fit a close frame (reason ≤ 123 bytes); only drain, slow consumer,
    /// source lag and an expired token send the `closing` notice, and their codes are the documented ones.
    #[test]
    fn catalogue() {
        let all = every_close();
        for close in all {
            assert!(close.reason().len() <= 123, "{close:?}");
            let (frame, _) = mt_testkit::parse_server_frame(&close.frame()).unwrap().unwrap();
            assert_eq!(frame.close_code(), Some(close.code()));
            assert_eq!(&frame.payload[2..], close.reason().as_bytes());
        }
        let notices: Vec<u16> = all.iter().filter(|c| c.sends_closing_notice()).map(|c| c.code()).collect();
        assert_eq!(notices, [1001, 4008, 1013, 4001]);
        assert_eq!(Close::SlowConsumer.metric_reason(), CloseReason::SlowConsumer);
    }
}
