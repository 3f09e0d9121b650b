//! `mt-hub`: the hub of mt-stream, the Monkeytown event-stream pod. The `mt-stream` binary
//! (`src/main.rs` at the workspace root) parses the command line and calls [`serve::run`] or
//! [`publish::run`]; `docs/architecture.md` walks the data path, the tasks and the locks.
//!
//! Layout (one module per responsibility):
//!
//! - [`config`]: the settings of `serve` (flags and environment) turned into typed values.
//! - [`serve`]: wires everything together and owns the shutdown drain sequence.
//! - [`listener`]: the HTTP phase both listeners share: accept loop, bounded pending
//!   connections (the admin port evicts idle ones), header timeouts, refusals that close.
//! - [`server`]: the public listener's routes (`/ws`, `/github/webhook`) and upgrade admission.
//! - [`upgrade`]: the WebSocket handshake checked in one pure function.
//! - [`admin`]: the internal listener: `/healthz`, `/readyz`, `/metrics`, `POST /publish`.
//! - [`session`]: one connection after the upgrade: reader task, batched writer, heartbeats.
//! - [`hub`]: the channel registry, connection admission, the fan-out of events, and the seam
//!   between history replay and live delivery.
//! - [`inbound`]: reading client frames with a buffer sized for idle connections.
//! - [`outbound`]: a connection's byte-bounded outbound queue, the slow-consumer rule, conflation.
//! - [`close`]: the catalogue of the ways a connection ends (code, reason, label, notice).
//! - [`protocol`]: the JSON messages of the wire protocol and channel-name validation.
//! - [`wire`]: WebSocket framing of what the hub sends (each event framed once, shared).
//! - [`source`]: where events come from: the embedded broker or Redis (with its canary).
//! - [`history`]: channel history (Redis streams, or in memory) read back for resume.
//! - [`recovery`]: resume from a client's last id, and a channel's catch-up after a reconnect:
//!   reading history and pacing the replay.
//! - [`event_id`]: event ids (`<ms>-<seq>`, Redis stream ids).
//! - [`auth`]: who may read which channel: token verification, grants, public channels.
//! - [`policy`]: per-channel policies by pattern: history kept, slow consumers conflated.
//! - [`refusal_log`]: refused upgrades logged, at most one line per reason per 10 s.
//! - [`metrics`]: every Prometheus metric, in one place.
//! - [`exposition`]: how `/metrics` answers: OpenMetrics or classic text by `Accept`, process metrics.
//! - [`shutdown`]: the cancellation token and task tracker every task runs under.
//! - [`github`]: the GitHub source: webhooks and the leased poller, publishing GitHub activity
//!   on `github:<owner>.<repo>` channels.
//! - [`publish`]: `mt-stream publish`, the operator's way to send one event.
//!
//! The pod budget is the `mt-budget` crate; `mt-stream deploy` is the `mt-deploy` crate (this
//! crate does not depend on the Kubernetes client).

pub mod admin;
pub mod auth;
pub mod close;
pub mod config;
pub mod event_id;
pub mod exposition;
pub mod github;
pub mod history;
pub mod hub;
pub mod inbound;
pub mod listener;
mod lock;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod protocol;
pub mod publish;
pub mod recovery;
pub mod refusal_log;
pub mod serve;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod source;
pub mod upgrade;
pub mod wire;
