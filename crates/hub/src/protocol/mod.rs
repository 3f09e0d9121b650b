//! The wire protocol's JSON messages (the user's contract is `docs/protocol.md`):
//!
//! - [`channel`]: channel names and the Redis prefix;
//! - [`client`]: what clients may send, and the errors a bad request gets;
//! - [`server`]: the event envelope and every reply and notice, framed once, shared by all.

pub mod channel;
pub mod client;
pub mod server;

pub use channel::{ChannelName, ChannelNameError, ChannelPrefix, MAX_CHANNEL_NAME};
pub use client::{
    parse_channel_list, parse_connect_query, ClientMessage, ConnectQuery, RequestError, MAX_CHANNELS_PER_CONNECTION,
    MAX_CLIENT_MESSAGE,
};
pub use server::{
    encode_authenticated, encode_closing, encode_error, encode_event, encode_recovered, encode_revoked, encode_skipped,
    encode_subscribed, encode_token_expiring, encode_unsubscribed, RecoveryOutcome, ResumeFailure,
};
