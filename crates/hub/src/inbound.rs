//! Reading client frames (RFC 6455 §5.2, server side: every client frame is masked).
//!
//! A deliberately small reader: an idle connection holds no read buffer at all, and a busy one
//! at most one 9 KiB message plus a header, because the hub's clients only ever send short
//! subscribe/unsubscribe messages. (fastwebsockets, which does the upgrade handshake, keeps an
//! 8 KiB read buffer per connection; at 1000 idle connections that alone was most of the
//! hub's memory per connection.) Length limits are checked from the header, before any payload
//! is buffered, so an oversized frame costs nothing to refuse; the buffer is only ever allocated
//! at the size needed, never over [`MAX_BUFFERED`] (the `client_frames` fuzz target checks it).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::MAX_CLIENT_MESSAGE;

/// A complete client message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// A whole text message (fragments joined), valid UTF-8.
    Text(String),
    /// A whole binary message (its content is not kept: the protocol has no binary messages).
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The peer's close frame and its code, if it gave one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("peer closed the connection")]
    Eof,
    #[error("socket error: {0}")]
    Io(String),
    #[error("message over {MAX_CLIENT_MESSAGE} bytes")]
    TooBig,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Most bytes asked of the socket at once while waiting for a frame header.
const HEADER_READ: usize = 256;
/// A buffer grown past this is given back once empty.
const KEEP_CAPACITY: usize = 1024;
/// Longest client frame header: 2 bytes, an 8-byte extended length and the 4-byte mask.
const MAX_HEADER: usize = 2 + 8 + 4;
/// Most bytes a reader ever holds (its [`FrameReader::buffered_capacity`]): one message of
/// [`MAX_CLIENT_MESSAGE`] and its header.
pub const MAX_BUFFERED: usize = MAX_CLIENT_MESSAGE + MAX_HEADER;

/// Reads client frames from `input`.
pub struct FrameReader<R> {
    input: R,
    buffer: BytesMut,
    /// A fragmented message in progress: (is_text, bytes so far).
    fragments: Option<(bool, Vec<u8>)>,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(input: R) -> Self {
        Self { input, buffer: BytesMut::new(), fragments: None }
    }

    /// Bytes held for this connection right now (for tests and accounting).
    pub fn buffered_capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Reads until at least `needed` bytes are buffered.
    async fn fill(&mut self, needed: usize) -> Result<(), ReadError> {
        while self.buffer.len() < needed {
            if self.buffer.capacity() < needed {
                self.grow(needed);
            }
            match self.input.read_buf(&mut self.buffer).await {
                Ok(0) => return Err(ReadError::Eof),
                Ok(_) => {}
                Err(error) => return Err(ReadError::Io(error.to_string())),
            }
        }
        Ok(())
    }

    /// Makes room for `needed` bytes (and at least [`HEADER_READ`] more than are buffered),
    /// allocating exactly that: `BytesMut::reserve` may double the allocation, which took a
    /// reader filling one 4 KiB message 200 bytes at a time to 8 KiB (found by the
    /// `client_frames` fuzz target). So every allocation of the buffer is made here, and none
    /// is over [`MAX_BUFFERED`].
    fn grow(&mut self, needed: usize) {
        debug_assert!(needed <= MAX_BUFFERED, "the header checks bound every frame");
        let len = self.buffer.len();
        let target = needed.max(len + HEADER_READ).min(MAX_BUFFERED);
        // Moving the buffered bytes to the front of the allocation, when that makes room, is
        // cheaper than a new allocation.
        if !self.buffer.try_reclaim(target - len) {
            let mut grown = BytesMut::with_capacity(target);
            grown.extend_from_slice(&self.buffer);
            self.buffer = grown;
        }
    }

    async fn header(&mut self) -> Result<Header, ReadError> {
        self.fill(2).await?;
        let (b0, b1) = (self.buffer[0], self.buffer[1]);
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let opcode = b0 & 0x0F;
        let fin = b0 & 0x80 != 0;
        let (extended, short_len) = match b1 & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(n as usize)),
        };
        self.fill(2 + extended).await?;
        let payload_len = match short_len {
            Some(n) => n,
            None if extended == 2 => u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
            None => {
                let len = u64::from_be_bytes(self.buffer[2..10].try_into().expect("8 bytes were read"));
                usize::try_from(len).unwrap_or(usize::MAX)
            }
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(ReadError::Protocol("control frames must not be fragmented"));
                }
                if payload_len > 125 {
                    return Err(ReadError::Protocol("control frame over 125 bytes"));
                }
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                let so_far = self.fragments.as_ref().map_or(0, |(_, bytes)| bytes.len());
                if payload_len > MAX_CLIENT_MESSAGE || so_far + payload_len > MAX_CLIENT_MESSAGE {
                    return Err(ReadError::TooBig);
                }
            }
            _ => return Err(ReadError::Protocol("unknown opcode")),
        }
        Ok(Header { fin, opcode, header_len: 2 + extended + 4, payload_len })
    }

    /// Reads the next complete message or control frame.
    pub async fn next(&mut self) -> Result<ClientFrame, ReadError> {
        loop {
            let header = self.header().await?;
            self.fill(header.header_len + header.payload_len).await?;
            let mask: [u8; 4] =
                self.buffer[header.header_len - 4..header.header_len].try_into().expect("the mask was read");
            self.buffer.advance(header.header_len);
            let mut payload = self.buffer.split_to(header.payload_len).to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            if self.buffer.is_empty() && self.buffer.capacity() > KEEP_CAPACITY {
                self.buffer = BytesMut::new();
            }
            let message = match header.opcode {
                OP_PING => return Ok(ClientFrame::Ping(payload)),
                OP_PONG => return Ok(ClientFrame::Pong),
                OP_CLOSE => {
                    return Ok(ClientFrame::Close(match payload.as_slice() {
                        [] => None,
                        [_] => return Err(ReadError::Protocol("close frame with a 1-byte body")),
                        [a, b, reason @ ..] => {
                            if std::str::from_utf8(reason).is_err() {
                                return Err(ReadError::InvalidUtf8);
                            }
                            Some(u16::from_be_bytes([*a, *b]))
                        }
                    }))
                }
                OP_TEXT | OP_BINARY => {
                    if self.fragments.is_some() {
                        return Err(ReadError::Protocol("new message inside a fragmented one"));
                    }
                    if !header.fin {
                        self.fragments = Some((header.opcode == OP_TEXT, payload));
                        continue;
                    }
                    (header.opcode == OP_TEXT, payload)
                }
                _ => {
                    // Continuation.
                    let Some((is_text, mut so_far)) = self.fragments.take() else {
                        return Err(ReadError::Protocol("continuation without a first frame"));
                    };
                    so_far.extend_from_slice(&payload);
                    if !header.fin {
                        self.fragments = Some((is_text, so_far));
                        continue;
                    }
                    (is_text, so_far)
                }
            };
            return match message {
                (true, bytes) => String::from_utf8(bytes).map(ClientFrame::Text).map_err(|_| ReadError::InvalidUtf8),
                (false, _) => Ok(ClientFrame::Binary),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame from the test kit (written independently of this reader).
    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        mt_testkit::client_frame(opcode, fin, payload)
    }

    /// In-memory input handed out at most `chunk` bytes per read, as TCP may split it.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.chunk.min(self.data.len()).min(buf.remaining());
            let (now, rest) = self.data.split_at(n);
            buf.put_slice(now);
            self.data = rest;
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn read_all(bytes: Vec<u8>) -> Vec<Result<ClientFrame, ReadError>> {
        let mut reader = FrameReader::new(bytes.as_slice());
        let mut out = Vec::new();
        loop {
            let frame = reader.next().await;
            let end = frame.is_err();
            out.push(frame);
            if end {
                return out;
            }
        }
    }

    /// Text, ping, pong, close and fragmented messages come out whole and unmasked.
    #[tokio::test]
    async fn reads_messages_and_control_frames() {
        let mut bytes = masked(OP_TEXT, true, b"hello");
        bytes.extend(masked(OP_PING, true, b"p"));
        bytes.extend(masked(OP_TEXT, false, b"frag"));
        bytes.extend(masked(OP_PONG, true, b""));
        bytes.extend(masked(OP_CONTINUATION, true, b"mented"));
        bytes.extend(masked(OP_BINARY, true, &[0, 1]));
        bytes.extend(masked(OP_CLOSE, true, &1000u16.to_be_bytes()));
        let frames = read_all(bytes).await;
        assert_eq!(
            frames,
            vec![
                Ok(ClientFrame::Text("hello".into())),
                Ok(ClientFrame::Ping(b"p".to_vec())),
                Ok(ClientFrame::Pong),
                Ok(ClientFrame::Text("fragmented".into())),
                Ok(ClientFrame::Binary),
                Ok(ClientFrame::Close(Some(1000))),
                Err(ReadError::Eof),
            ]
        );
    }

    /// [`MAX_CLIENT_MESSAGE`] is allowed; one byte more is refused from the header, alone or
    /// across fragments.
    #[tokio::test]
    async fn message_size_limit() {
        let ok = read_all(masked(OP_TEXT, true, &vec![b'a'; MAX_CLIENT_MESSAGE])).await;
        assert!(matches!(ok[0], Ok(ClientFrame::Text(_))));
        let too_big = read_all(masked(OP_TEXT, true, &vec![b'a'; MAX_CLIENT_MESSAGE + 1])).await;
        assert_eq!(too_big[0], Err(ReadError::TooBig));
        // A huge declared length is refused before any payload arrives.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(read_all(header).await[0], Err(ReadError::TooBig));
        let mut fragments = masked(OP_TEXT, false, &vec![b'a'; MAX_CLIENT_MESSAGE - 1000]);
        fragments.extend(masked(OP_CONTINUATION, true, &vec![b'a'; 1001]));
        assert_eq!(read_all(fragments).await[0], Err(ReadError::TooBig));
    }

    /// Protocol violations and invalid UTF-8 are errors of their own kind.
    #[tokio::test]
    async fn violations() {
        assert_eq!(read_all(masked(OP_TEXT, true, &[0xff, 0xfe])).await[0], Err(ReadError::InvalidUtf8));
        let unmasked = vec![0x81, 0x01, b'a'];
        assert!(matches!(read_all(unmasked).await[0], Err(ReadError::Protocol(_))));
        assert!(matches!(read_all(masked(0x3, true, b"")).await[0], Err(ReadError::Protocol(_))));
        assert!(matches!(read_all(masked(OP_PING, false, b"")).await[0], Err(ReadError::Protocol(_))));
        assert!(matches!(read_all(masked(OP_CONTINUATION, true, b"x")).await[0], Err(ReadError::Protocol(_))));
        let mut rsv = masked(OP_TEXT, true, b"x");
        rsv[0] |= 0x40;
        assert!(matches!(read_all(rsv).await[0], Err(ReadError::Protocol(_))));
    }

    /// Regression (found by the `client_frames` fuzz target): one 4 KiB message arriving 200
    /// bytes at a time made the buffer ask for 256 bytes more when 104 were missing, and
    /// `BytesMut::reserve` doubled it to 8208 bytes.
    #[tokio::test]
    async fn buffer_never_doubles_while_filling_a_message() {
        let frame = masked(OP_TEXT, true, &vec![b'a'; MAX_CLIENT_MESSAGE]);
        // The connection ends 3841 bytes into the payload, so the reader is seen mid-message.
        let mut reader = FrameReader::new(Chunked { data: &frame[..8 + 3841], chunk: 200 });
        assert_eq!(reader.next().await, Err(ReadError::Eof));
        assert!(reader.buffered_capacity() <= MAX_BUFFERED, "{}", reader.buffered_capacity());
    }

    /// Whatever the read sizes and however the frames straddle reads, the reader never holds
    /// more than `MAX_BUFFERED` (before the fix: 8220 bytes for a 4 KiB message read 7 bytes at a
    /// time, 5112 when a 1000-byte message came first).
    #[tokio::test]
    async fn buffer_stays_within_max_buffered() {
        for read_size in [1, 7, 100, 200, 255, 256, 300, 1000, 4096, usize::MAX] {
            for first in [0, 10, 125, 126, 200, 250, 1000, 3000, MAX_CLIENT_MESSAGE] {
                let mut bytes = masked(OP_TEXT, true, &vec![b'a'; first]);
                bytes.extend(masked(OP_TEXT, true, &vec![b'b'; MAX_CLIENT_MESSAGE]));
                bytes.extend(masked(OP_PING, true, b"p"));
                bytes.extend(masked(OP_TEXT, false, &vec![b'c'; 3000]));
                bytes.extend(masked(OP_CONTINUATION, true, &vec![b'c'; MAX_CLIENT_MESSAGE - 3000]));
                for cut in [bytes.len(), bytes.len() - 1000] {
                    let mut reader = FrameReader::new(Chunked { data: &bytes[..cut], chunk: read_size });
                    loop {
                        let frame = reader.next().await;
                        let held = reader.buffered_capacity();
                        assert!(held <= MAX_BUFFERED, "read {read_size}, first {first}, cut {cut}: {held}");
                        if frame.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// An idle reader holds no buffer; a large message's buffer is given back once handled.
    #[tokio::test]
    async fn buffer_is_released() {
        let bytes = masked(OP_TEXT, true, &vec![b'a'; 4000]);
        let mut reader = FrameReader::new(bytes.as_slice());
        assert_eq!(reader.buffered_capacity(), 0);
        assert!(matches!(reader.next().await, Ok(ClientFrame::Text(_))));
        assert_eq!(reader.buffered_capacity(), 0);
    }
}
