//! A raw WebSocket client for peers that misbehave: the handshake by hand, then frames built
//! and parsed by the test kit, not by the hub's code.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

/// A raw WebSocket client: the handshake by hand, then bytes. For peers that misbehave
/// (never answer pings, never read, send what a library would refuse to send).
pub struct RawClient {
    pub stream: TcpStream,
    frames: mt_testkit::ServerFrames,
}

impl RawClient {
    /// Upgrades at `/ws{query}`; `recv_buffer` shrinks the socket's receive buffer.
    pub async fn connect(addr: SocketAddr, query: &str, recv_buffer: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.expect("connects");
        let request = format!(
            "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        let header_end = loop {
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "server closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        assert!(buffer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buffer));
        let mut frames = mt_testkit::ServerFrames::new();
        frames.extend(&buffer[header_end..]);
        Self { stream, frames }
    }

    /// Sends one masked client frame (framed by the test kit, not by the hub's code).
    pub async fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.stream.write_all(&mt_testkit::client_frame(opcode, fin, payload)).await.unwrap();
    }

    /// Reads one server frame: (opcode, payload); `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(frame) = self.frames.next_frame().expect("the server frames correctly") {
                return Some((frame.opcode, frame.payload));
            }
            let mut chunk = [0u8; 16 << 10];
            let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("server answers in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.frames.extend(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame; returns its code (panics at end of stream).
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.read_frame().await {
                Some((0x8, payload)) => return u16::from_be_bytes([payload[0], payload[1]]),
                Some(_) => continue,
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}
