//! Channel grants end to end: the real binary with a verification key, real WebSocket clients,
//! and tokens made independently of the hub ([`jwt`]: hand-written JWS, `ring`, `openssl`).
//!
//! Modules: `refusals` (every check a token can fail, each closing with 4001 and its reason),
//! `grants` (public channels, grant patterns at their edges, `forbidden`, the 10 s deadline),
//! `lifetime` (expiry notice, refresh that drops a grant, the close at `exp`), `keys` (RS256,
//! ES256, EdDSA from a JWKS file, rotation without a restart, `mt-stream token`) and `secrecy`
//! (no token in any log line or metric).

#[path = "../common/mod.rs"]
mod common;
mod jwt;

mod grants;
mod keys;
mod lifetime;
mod refusals;
mod secrecy;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// A hub that verifies HS256 tokens with [`jwt::SECRET`]; `builds` and `town:*` are public.
fn hmac_hub(extra: &[(&str, &str)]) -> HubProcess {
    let mut env = vec![("MT_AUTH_HMAC_SECRET", jwt::SECRET), ("MT_PUBLIC_CHANNELS", "builds,town:*")];
    env.extend_from_slice(extra);
    HubProcess::start(&env)
}

/// Connects with `query` (the upgrade always succeeds: tokens are checked after it).
async fn connect(hub: &HubProcess, query: &str) -> Client {
    tokio_tungstenite::connect_async(hub.ws_url(query)).await.expect("upgrade succeeds").0
}

/// Reads until the close frame, skipping other messages; returns its code and reason.
async fn close_of(client: &mut Client) -> (u16, String) {
    for _ in 0..100 {
        let message = tokio::time::timeout(DEADLINE, client.next()).await.expect("close arrives in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
    panic!("100 messages and no close frame")
}

/// The connection's token is refused: 4001 with `reason`.
async fn assert_refused(hub: &HubProcess, token: &str, reason: &str) {
    let mut client = connect(hub, &format!("?token={token}")).await;
    assert_eq!(close_of(&mut client).await, (4001, format!("unauthorized: {reason}")), "token {token}");
}

/// The connection's token is accepted: `authenticated` comes back.
async fn assert_accepted(hub: &HubProcess, token: &str) -> Client {
    let mut client = connect(hub, &format!("?token={token}")).await;
    let reply = next_json(&mut client).await;
    assert_eq!(reply["op"], "authenticated", "{reply}");
    assert_eq!(reply["verified"], true, "{reply}");
    client
}
/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let path = std::env::temp_dir().join(format!("mt-auth-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&path).unwrap();
    TempDir(path)
}

/// The value of `name{reason="<reason>"}` in an exposition (0 when absent).
fn labelled(exposition: &str, name: &str, reason: &str) -> f64 {
    let prefix = format!("{name}{{reason=\"{reason}\"}} ");
    exposition.lines().find_map(|line| line.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
}
