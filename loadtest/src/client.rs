//! A lean WebSocket client for load: the handshake by hand, then a read loop that parses frame
//! headers and pulls the sequence number and timestamp out of each event by byte scanning (no
//! JSON parsing, no allocation per message). Pings are answered, so long runs survive the
//! hub's heartbeat.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::ClientStats;

/// A connected, subscribed client.
pub struct WsClient {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    start: usize,
}

/// What the read loop saw at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The hub closed with this code.
    Closed(u16),
    /// The socket ended without a close frame.
    Eof,
    /// The caller's deadline or stop signal.
    Stopped,
}

/// The `Sec-WebSocket-Key` of every handshake: the base64 of exactly 16 bytes
/// (`loadtest-mt-strm`), as RFC 6455 §4.1 requires and the hub checks.
pub const HANDSHAKE_KEY: &str = "bG9hZHRlc3QtbXQtc3RybQ==";

impl WsClient {
    /// Connects to `/ws?channels=<channel>` (resuming after `since`, and with the connection
    /// token `token`, when given) and waits for the `subscribed` reply.
    pub async fn connect(
        addr: SocketAddr,
        channel: &str,
        recv_buffer: Option<u32>,
        since: Option<&str>,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let mut stream = socket.connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let since = since.map(|id| format!("&since={id}")).unwrap_or_default();
        let token = token.map(|token| format!("&token={token}")).unwrap_or_default();
        let request = format!(
            "GET /ws?channels={channel}{since}{token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut client = Self { stream, buffer: Vec::with_capacity(8 << 10), start: 0 };
        let header_end = loop {
            if let Some(at) = client.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if client.fill().await? == 0 {
                bail!("hub closed during the handshake");
            }
        };
        if !client.buffer.starts_with(b"HTTP/1.1 101") {
            let status = String::from_utf8_lossy(&client.buffer[..header_end.min(64)]).into_owned();
            bail!("upgrade refused: {}", status.lines().next().unwrap_or_default());
        }
        client.start = header_end;
        // The subscribed reply, after `authenticated` when a token was given.
        for _ in 0..2 {
            match client.next_frame().await? {
                Some((0x1, text)) if client.buffer[text.clone()].windows(12).any(|w| w == b"\"subscribed\"") => {
                    return Ok(client)
                }
                Some((0x1, _)) => continue,
                other => bail!("expected the subscribed reply, got {other:?}"),
            }
        }
        bail!("no subscribed reply")
    }

    /// Reads more bytes; cancel-safe (`read_buf` appends only what it read).
    async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > self.buffer.capacity() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        if self.buffer.capacity() - self.buffer.len() < 4096 {
            self.buffer.reserve(16 << 10);
        }
        Ok(self.stream.read_buf(&mut self.buffer).await?)
    }

    /// The next complete frame as (opcode, payload range in the buffer); None at EOF.
    async fn next_frame(&mut self) -> anyhow::Result<Option<(u8, std::ops::Range<usize>)>> {
        loop {
            if let Some(frame) = mt_testkit::parse_server_frame_at(&self.buffer, self.start)
                .map_err(|error| anyhow::anyhow!("the hub sent a bad frame: {error:?}"))?
            {
                self.start = frame.end;
                return Ok(Some((frame.opcode, frame.payload)));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads events until `stop` resolves or the hub closes; records them in `stats`.
    pub async fn run(
        &mut self,
        stats: &mut ClientStats,
        progress: Option<&std::sync::atomic::AtomicU64>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Ending {
        tokio::pin!(stop);
        let mut unreported = 0u64;
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut stop => return Ending::Stopped,
                frame = self.next_frame() => frame,
            };
            // next_frame loses nothing when cancelled: bytes read stay in the buffer.
            match frame {
                Ok(Some((0x1, range))) => {
                    if let Some((channel, seq, sent_us)) = parse_event(&self.buffer[range]) {
                        stats.record(channel, seq, sent_us);
                        unreported += 1;
                    }
                    // Every 16 events, and whenever the buffer is used up (before waiting for
                    // more), so a reader of `progress` sees the last events too.
                    if unreported > 0 && (unreported == 16 || self.start == self.buffer.len()) {
                        if let Some(progress) = progress {
                            progress.fetch_add(unreported, std::sync::atomic::Ordering::Relaxed);
                        }
                        unreported = 0;
                    }
                }
                Ok(Some((0x9, range))) => {
                    let payload = self.buffer[range].to_vec();
                    let pong = masked_frame(0xA, &payload);
                    if self.stream.write_all(&pong).await.is_err() {
                        return Ending::Eof;
                    }
                }
                Ok(Some((0x8, range))) => {
                    let payload = &self.buffer[range];
                    let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    let _ = self.stream.write_all(&masked_frame(0x8, &code.to_be_bytes())).await;
                    return Ending::Closed(code);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Ending::Eof,
            }
        }
    }

    /// Reads (discarding events) until the hub's close frame or EOF, for at most `limit`.
    pub async fn read_until_close(&mut self, limit: Duration) -> Ending {
        let mut ignored = ClientStats::new(0);
        self.run(&mut ignored, None, tokio::time::sleep(limit)).await
    }

    /// Sends a close frame (1000) and shuts the socket.
    pub async fn close(mut self) {
        let _ = self.stream.write_all(&masked_frame(0x8, &1000u16.to_be_bytes())).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Finds `"data":{"c":C,"s":S,"t":T` in an event and returns (C, S, T).
pub fn parse_event(frame: &[u8]) -> Option<(usize, u64, u64)> {
    const MARK: &[u8] = b"\"data\":{\"c\":";
    let at = frame.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let (channel, rest) = parse_number(&frame[at..])?;
    let rest = rest.strip_prefix(b",\"s\":")?;
    let (seq, rest) = parse_number(rest)?;
    let rest = rest.strip_prefix(b",\"t\":")?;
    let (sent, _) = parse_number(rest)?;
    Some((channel as usize, seq, sent))
}

fn parse_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for b in &bytes[..digits] {
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some((n, &bytes[digits..]))
}

/// A masked client frame (the test kit's encoder: every length class).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    mt_testkit::client_frame(opcode, true, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events are found in the hub's envelope without JSON parsing.
    /// The hub refuses a key that is not the base64 of 16 bytes (a longer one made every
    /// connection of every scenario fail once the hub began checking keys).
    #[test]
    fn the_handshake_key_is_one_the_hub_accepts() {
        assert!(mt_hub::upgrade::is_base64_of_16_bytes(HANDSHAKE_KEY.as_bytes()));
    }

    #[test]
    fn parses_events_from_the_envelope() {
        let frame = br#"{"channel":"lt3","id":"9","data":{"c":3,"s":42,"t":1700000000000000,"p":"xx"}}"#;
        assert_eq!(parse_event(frame), Some((3, 42, 1_700_000_000_000_000)));
        assert_eq!(parse_event(br#"{"op":"subscribed","channels":["a"]}"#), None);
    }
}
