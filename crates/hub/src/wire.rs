//! WebSocket framing of what the hub sends (RFC 6455 §5.2, server side: never masked).
//!
//! Server frames are the same bytes for every recipient, so the hub frames each event once and
//! the writers put the shared bytes on the sockets as they are. Reading client frames is
//! [`crate::inbound`]'s job; this module only writes.

use bytes::Bytes;

/// Longest server frame header: 2 bytes + 8-byte extended length.
pub const MAX_SERVER_HEADER: usize = 10;

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// Writes a frame header for `len` payload bytes ending at `end` of `buffer`; returns where it starts.
fn write_header(buffer: &mut [u8], end: usize, opcode: u8, len: usize) -> usize {
    let first = 0x80 | opcode; // FIN, no RSV bits
    if len < 126 {
        let start = end - 2;
        buffer[start] = first;
        buffer[start + 1] = len as u8;
        start
    } else if len <= u16::MAX as usize {
        let start = end - 4;
        buffer[start] = first;
        buffer[start + 1] = 126;
        buffer[start + 2..end].copy_from_slice(&(len as u16).to_be_bytes());
        start
    } else {
        let start = end - 10;
        buffer[start] = first;
        buffer[start + 1] = 127;
        buffer[start + 2..end].copy_from_slice(&(len as u64).to_be_bytes());
        start
    }
}

/// Turns `buffer` (`room` reserved bytes, then the payload) into one text frame without copying
/// the payload. `room` must be at least [`MAX_SERVER_HEADER`].
pub fn frame_text_in_place(mut buffer: Vec<u8>, room: usize) -> Bytes {
    assert!(room >= MAX_SERVER_HEADER, "frame_text_in_place needs {MAX_SERVER_HEADER} bytes of room");
    let len = buffer.len() - room;
    let start = write_header(&mut buffer, room, OPCODE_TEXT, len);
    Bytes::from(buffer).slice(start..)
}

/// A complete control or data frame around `payload` (copied; for small frames).
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buffer = vec![0u8; MAX_SERVER_HEADER + payload.len()];
    buffer[MAX_SERVER_HEADER..].copy_from_slice(payload);
    let start = write_header(&mut buffer, MAX_SERVER_HEADER, opcode, payload.len());
    Bytes::from(buffer).slice(start..)
}

/// A close frame with `code` and a short reason (at most 123 bytes are kept). The codes and
/// reasons the hub sends are in [`crate::close`].
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OPCODE_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each length class gets the right header and the payload survives.
    #[test]
    fn headers_for_every_length_class() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let payload = vec![b'x'; len];
            let framed = frame(OPCODE_TEXT, &payload);
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(framed.len(), header + len, "len {len}");
            assert_eq!(framed[0], 0x81);
            let (parsed, used) = mt_testkit::parse_server_frame(&framed).unwrap().unwrap();
            assert_eq!(used, framed.len());
            assert_eq!(parsed.opcode, OPCODE_TEXT);
            assert_eq!(parsed.payload, payload);
        }
    }

    /// Close frames carry the code big-endian and a truncated reason.
    #[test]
    fn close_frames_carry_code_and_reason() {
        let framed = close_frame(4008, &"é".repeat(100));
        let (parsed, _) = mt_testkit::parse_server_frame(&framed).unwrap().unwrap();
        let (opcode, body) = (parsed.opcode, &parsed.payload);
        assert_eq!(opcode, OPCODE_CLOSE);
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), 4008);
        assert!(body.len() <= 125);
        assert!(std::str::from_utf8(&body[2..]).is_ok());
    }
}
