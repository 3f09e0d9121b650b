//! What mt-stream's tests, benches and load generator share, in one place:
//!
//! - [`client_frame`]: WebSocket frames as a client sends them (RFC 6455 §5.2: masked), in every
//!   length class, fragmented or not;
//! - [`parse_server_frame`] and [`ServerFrames`]: frames as the server sends them (unmasked),
//!   parsed from a byte buffer that may hold several or a partial one;
//! - [`Rng`]: a small seeded random generator, so a failing randomised run can be repeated.
//!
//! It is written from the RFC, independently of the hub's own framing (`mt_hub::wire`,
//! `mt_hub::inbound`): a test that used the hub's encoder to check the hub's decoder would pass
//! whatever both got wrong. It has no dependencies for the same reason.

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// The masking key used when a caller gives none; any value is valid.
pub const DEFAULT_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: FIN set when `fin`, the payload masked with `mask`, the length in the shortest
/// form the RFC allows (7 bits up to 125, 16 bits up to 65535, 64 bits above).
pub fn client_frame_masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(if fin { 0x80 } else { 0x00 } | (opcode & 0x0F));
    let len = payload.len();
    if len <= 125 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key));
    frame
}

/// A client frame with [`DEFAULT_MASK`].
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    client_frame_masked(opcode, fin, payload, DEFAULT_MASK)
}

/// A complete (FIN) client text frame.
pub fn client_text(text: &str) -> Vec<u8> {
    client_frame(opcode::TEXT, true, text.as_bytes())
}

/// A client close frame with `code` and `reason`.
pub fn client_close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    client_frame(opcode::CLOSE, true, &payload)
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The code of a close frame (`None` for other frames or a close without a code).
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The payload of a text frame as a string.
    pub fn text(&self) -> Option<&str> {
        (self.opcode == opcode::TEXT).then(|| std::str::from_utf8(&self.payload).ok()).flatten()
    }
}

/// Why a buffer does not start with a valid server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The server masked a frame (RFC 6455 §5.1: it must not).
    Masked,
    /// RSV bits set without an extension that defines them.
    ReservedBits,
    /// A length that is not in its shortest form, or over 2^63.
    BadLength,
}

/// Where a frame lies in a buffer: its header fields and the payload's byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAt {
    pub fin: bool,
    pub opcode: u8,
    pub payload: std::ops::Range<usize>,
    /// The index just past the frame.
    pub end: usize,
}

/// Parses the server frame starting at `at` in `buffer`: `Ok(None)` when the buffer holds only
/// part of it, without copying the payload.
pub fn parse_server_frame_at(buffer: &[u8], at: usize) -> Result<Option<FrameAt>, FrameError> {
    let Some(&[first, second]) = buffer.get(at..at + 2) else { return Ok(None) };
    if first & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if second & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, header) = match second & 0x7F {
        126 => {
            let Some(bytes) = buffer.get(at + 2..at + 4) else { return Ok(None) };
            let len = u16::from_be_bytes([bytes[0], bytes[1]]) as u64;
            if len < 126 {
                return Err(FrameError::BadLength);
            }
            (len, 4)
        }
        127 => {
            let Some(bytes) = buffer.get(at + 2..at + 10) else { return Ok(None) };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len <= 0xFFFF || len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        short => (short as u64, 2),
    };
    let start = at + header;
    let Ok(len) = usize::try_from(len) else { return Err(FrameError::BadLength) };
    let end = start.checked_add(len).ok_or(FrameError::BadLength)?;
    if end > buffer.len() {
        return Ok(None);
    }
    Ok(Some(FrameAt { fin: first & 0x80 != 0, opcode: first & 0x0F, payload: start..end, end }))
}

/// Parses the server frame at the start of `buffer`: the frame and how many bytes it took.
pub fn parse_server_frame(buffer: &[u8]) -> Result<Option<(ServerFrame, usize)>, FrameError> {
    Ok(parse_server_frame_at(buffer, 0)?
        .map(|at| (ServerFrame { fin: at.fin, opcode: at.opcode, payload: buffer[at.payload].to_vec() }, at.end)))
}

/// Server frames from a byte stream read in arbitrary pieces.
#[derive(Debug, Default)]
pub struct ServerFrames {
    buffer: Vec<u8>,
}

impl ServerFrames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<ServerFrame>, FrameError> {
        match parse_server_frame(&self.buffer)? {
            Some((frame, used)) => {
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// A seeded random generator (xorshift64*): not for secrets, only so that a randomised test's
/// choices can be repeated from the seed it prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// The environment variable that overrides a test's seed.
pub const SEED_VARIABLE: &str = "MT_TEST_SEED";

impl Rng {
    /// A generator seeded with `seed` (0 is mapped to 1: xorshift never leaves 0).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Seeded from `MT_TEST_SEED` when it is set, else `default`; prints the seed so that a
    /// failure can be repeated.
    pub fn from_env(what: &str, default: u64) -> Self {
        let seed = std::env::var(SEED_VARIABLE).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default);
        eprintln!("{what}: seed {seed} ({SEED_VARIABLE}={seed} repeats this run)");
        Self::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// A number in [0, 1).
    pub fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fills `bytes` with random bytes.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(frame: &[u8]) -> (u8, bool, Vec<u8>) {
        let (len, header) = match frame[1] & 0x7F {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let mask = &frame[header..header + 4];
        let payload = frame[header + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect::<Vec<_>>();
        assert_eq!(payload.len(), len);
        (frame[0] & 0x0F, frame[0] & 0x80 != 0, payload)
    }

    /// Every length class gets its header (the bug that made the load generator mis-frame any
    /// payload over 125 bytes), and the payload survives masking.
    #[test]
    fn client_frames_in_every_length_class() {
        for (len, header) in [(0, 6), (125, 6), (126, 8), (65_535, 8), (65_536, 14)] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(opcode::TEXT, len != 126, &payload);
            assert_eq!(frame.len(), header + len, "length {len}");
            let (op, fin, body) = unmask(&frame);
            assert_eq!((op, fin), (opcode::TEXT, len != 126));
            assert_eq!(body, payload);
        }
    }

    /// Server frames parse whole, report partial ones, and refuse masked or non-minimal ones.
    #[test]
    fn server_frames_parse_and_refuse() {
        let mut bytes = vec![0x81, 3, b'a', b'b', b'c', 0x88, 2, 0x03, 0xE8];
        bytes.extend([0x81, 126, 0x01, 0x00]);
        bytes.extend(vec![b'x'; 256]);
        let mut frames = ServerFrames::new();
        frames.extend(&bytes[..4]);
        assert_eq!(frames.next_frame(), Ok(None));
        frames.extend(&bytes[4..]);
        assert_eq!(frames.next_frame().unwrap().unwrap().text(), Some("abc"));
        assert_eq!(frames.next_frame().unwrap().unwrap().close_code(), Some(1000));
        assert_eq!(frames.next_frame().unwrap().unwrap().payload.len(), 256);
        assert_eq!(frames.pending(), 0);
        assert_eq!(parse_server_frame(&[0x81, 0x81, 1, 2, 3, 4, 5]), Err(FrameError::Masked));
        assert_eq!(parse_server_frame(&[0x81, 126, 0, 5, 1, 2, 3, 4, 5]), Err(FrameError::BadLength));
        assert_eq!(parse_server_frame(&[0xC1, 0]), Err(FrameError::ReservedBits));
    }

    /// The same seed gives the same sequence; `below` stays in range.
    #[test]
    fn rng_repeats_from_its_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 10));
        assert!(xs.iter().any(|&x| x != xs[0]), "not constant");
        let f = Rng::new(3).fraction();
        assert!((0.0..1.0).contains(&f));
    }
}
