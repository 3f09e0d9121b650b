//! What a client sends after the upgrade, as arbitrary bytes, read by the hub's frame reader
//! (`mt_hub::inbound::FrameReader`).
//!
//! Input: the first byte sets how the bytes arrive (0: all at once; n: n bytes per read, so
//! headers and payloads are split at every point, as TCP may split them); the rest is the byte
//! stream. Frames are read until the first error (EOF included). Checked: no panic; every read
//! that succeeds consumes input, so reading ends; what comes out respects the protocol's limits
//! (a text message of at most `MAX_CLIENT_MESSAGE` (9 KiB) of valid UTF-8, a ping of at most 125 bytes); the buffer
//! never holds more than `mt_hub::inbound::MAX_BUFFERED`; a ping's payload framed back as a pong
//! (as the session does) is a valid server frame.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use mt_hub::inbound::{ClientFrame, FrameReader, MAX_BUFFERED};
use mt_hub::protocol::MAX_CLIENT_MESSAGE;
use mt_hub::wire;
use tokio::io::{AsyncRead, ReadBuf};

/// The smallest client frame: 2 header bytes and the 4-byte mask.
const MIN_FRAME: usize = 6;

/// One current-thread runtime for the whole process (the reader needs no I/O driver: the input
/// is in memory and always ready).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime"))
}

/// In-memory input handed out at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else { return };
    let chunk = if chunk == 0 { usize::MAX } else { usize::from(chunk) };
    runtime().block_on(async {
        let mut reader = FrameReader::new(Chunked { data, chunk });
        // Each frame read consumes at least MIN_FRAME bytes, so this many reads end the input.
        for _ in 0..=data.len() / MIN_FRAME {
            let frame = reader.next().await;
            let held = reader.buffered_capacity();
            assert!(held <= MAX_BUFFERED, "the reader holds {held} bytes, over {MAX_BUFFERED}");
            match frame {
                Err(_) => return,
                Ok(ClientFrame::Text(text)) => assert!(text.len() <= MAX_CLIENT_MESSAGE, "{} bytes", text.len()),
                Ok(ClientFrame::Ping(payload)) => {
                    assert!(payload.len() <= 125, "ping of {} bytes", payload.len());
                    let pong = wire::frame(wire::OPCODE_PONG, &payload);
                    let (parsed, used) = mt_testkit::parse_server_frame(&pong)
                        .expect("a valid pong frame")
                        .expect("a complete pong frame");
                    assert_eq!(used, pong.len());
                    assert_eq!((parsed.fin, parsed.opcode, parsed.payload), (true, wire::OPCODE_PONG, payload));
                }
                Ok(ClientFrame::Binary | ClientFrame::Pong | ClientFrame::Close(_)) => {}
            }
        }
        panic!("{} bytes gave more than {} frames without an error", data.len(), data.len() / MIN_FRAME);
    });
});
