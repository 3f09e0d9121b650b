//! The WebSocket opening handshake, checked as RFC 6455 §4.2.1 says, in one pure function:
//! [`check_upgrade`] takes the request's method, HTTP version and headers and says whether the
//! request is a valid upgrade, or which HTTP answer refuses it ([`UpgradeRefusal`]). It does no
//! I/O and never panics, so a fuzz target can call it with anything.
//!
//! What the hub checks besides (drain, `Origin`, the query, the connection cap) is the public
//! listener's business (`server.rs`); computing `Sec-WebSocket-Accept` is fastwebsockets'.

use hyper::header::{HeaderMap, HeaderName, CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Method, StatusCode, Version};

/// The only WebSocket version there is (RFC 6455).
pub const WEBSOCKET_VERSION: &str = "13";

/// Why an upgrade request is refused; each carries its HTTP answer ([`status`](Self::status),
/// [`headers`](Self::headers), the message is its `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// Not `GET` (RFC 6455 §4.1): 405 with `Allow: GET`.
    #[error("a WebSocket upgrade is a GET request")]
    Method,
    /// Not HTTP/1.1 (an HTTP/1.0 client cannot be switched to another protocol): 400.
    #[error("a WebSocket upgrade needs HTTP/1.1")]
    HttpVersion,
    /// No `Upgrade: websocket` or no `upgrade` token in `Connection`: 426 with `Upgrade: websocket`.
    #[error("expected a WebSocket upgrade")]
    NotAnUpgrade,
    /// No `Sec-WebSocket-Key`: 400.
    #[error("Sec-WebSocket-Key header is missing")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 of exactly 16 bytes, or is repeated: 400.
    #[error("Sec-WebSocket-Key must be the base64 of 16 bytes")]
    BadKey,
    /// `Sec-WebSocket-Version` is missing, repeated or not 13: 426 with
    /// `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2), and `Upgrade: websocket`.
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
}

impl UpgradeRefusal {
    /// The HTTP status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::HttpVersion | Self::MissingKey | Self::BadKey => StatusCode::BAD_REQUEST,
            Self::NotAnUpgrade | Self::Version => StatusCode::UPGRADE_REQUIRED,
        }
    }

    /// Headers the answer must carry. A 426 names the protocol to upgrade to (RFC 9110
    /// §15.5.22) and lists `upgrade` in `Connection` (RFC 9110 §7.8), to which the listener
    /// adds `close`.
    pub fn headers(self) -> &'static [(HeaderName, &'static str)] {
        const ALLOW_GET: &[(HeaderName, &str)] = &[(hyper::header::ALLOW, "GET")];
        const UPGRADE_TO_WEBSOCKET: &[(HeaderName, &str)] = &[(UPGRADE, "websocket"), (CONNECTION, "upgrade")];
        const VERSION_13: &[(HeaderName, &str)] =
            &[(SEC_WEBSOCKET_VERSION, WEBSOCKET_VERSION), (UPGRADE, "websocket"), (CONNECTION, "upgrade")];
        match self {
            Self::Method => ALLOW_GET,
            Self::NotAnUpgrade => UPGRADE_TO_WEBSOCKET,
            Self::Version => VERSION_13,
            Self::HttpVersion | Self::MissingKey | Self::BadKey => &[],
        }
    }
}

/// Checks an upgrade request: method `GET`, HTTP/1.1, `Upgrade: websocket`, an `upgrade` token
/// in `Connection`, one `Sec-WebSocket-Key` that is the base64 of exactly 16 bytes, and one
/// `Sec-WebSocket-Version: 13`. The first failing check, in that order, is the refusal.
pub fn check_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Result<(), UpgradeRefusal> {
    if method != Method::GET {
        return Err(UpgradeRefusal::Method);
    }
    if version != Version::HTTP_11 {
        return Err(UpgradeRefusal::HttpVersion);
    }
    if !has_token(headers, &UPGRADE, b"websocket") || !has_token(headers, &CONNECTION, b"upgrade") {
        return Err(UpgradeRefusal::NotAnUpgrade);
    }
    match single(headers, &SEC_WEBSOCKET_KEY) {
        Single::Missing => return Err(UpgradeRefusal::MissingKey),
        Single::Repeated => return Err(UpgradeRefusal::BadKey),
        Single::One(key) if !is_base64_of_16_bytes(key) => return Err(UpgradeRefusal::BadKey),
        Single::One(_) => {}
    }
    match single(headers, &SEC_WEBSOCKET_VERSION) {
        Single::One(version) if version == WEBSOCKET_VERSION.as_bytes() => Ok(()),
        _ => Err(UpgradeRefusal::Version),
    }
}

enum Single<'a> {
    Missing,
    Repeated,
    One(&'a [u8]),
}

/// A header that must appear at most once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Single<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Single::Missing,
        (Some(_), Some(_)) => Single::Repeated,
        (Some(value), None) => Single::One(value.as_bytes()),
    }
}

/// Some `name` header lists `token` (comma-separated, ASCII case-insensitive, spaces around
/// items ignored).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| value.as_bytes().split(|&b| b == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token)))
}

/// `value` is the canonical base64 (standard alphabet, padded) of exactly 16 bytes: 22
/// characters of the alphabet, the last of which carries 2 bits and 4 zero bits (so it is one
/// of `A`, `Q`, `g`, `w`), then `==`. No whitespace.
pub fn is_base64_of_16_bytes(value: &[u8]) -> bool {
    let is_alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    value.len() == 24
        && value[..22].iter().all(is_alphabet)
        && matches!(value[21], b'A' | b'Q' | b'g' | b'w')
        && &value[22..] == b"=="
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Standard padded base64, written from RFC 4648 for these tests.
    fn base64(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        headers
    }

    fn valid() -> Vec<(&'static str, &'static str)> {
        vec![
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ]
    }

    /// `valid()` with `name` replaced by `values` (none = left out).
    fn with(name: &str, values: &[&'static str]) -> HeaderMap {
        let mut pairs: Vec<_> = valid().into_iter().filter(|(n, _)| *n != name).collect();
        for value in values {
            let name: &'static str = valid().iter().find(|(n, _)| *n == name).unwrap().0;
            pairs.push((name, value));
        }
        request(&pairs)
    }

    fn check(headers: &HeaderMap) -> Result<(), UpgradeRefusal> {
        check_upgrade(&Method::GET, Version::HTTP_11, headers)
    }

    /// RFC 6455's example handshake passes, whatever the case of the tokens, with other tokens
    /// around them (Firefox sends `Connection: keep-alive, Upgrade`).
    #[test]
    fn a_valid_handshake_passes() {
        assert_eq!(check(&request(&valid())), Ok(()));
        assert_eq!(check(&with("connection", &["keep-alive, Upgrade"])), Ok(()));
        assert_eq!(check(&with("connection", &["keep-alive", "UPGRADE"])), Ok(()));
        assert_eq!(check(&with("upgrade", &["WebSocket"])), Ok(()));
        assert_eq!(check(&with("upgrade", &["h2c, websocket"])), Ok(()));
    }

    /// Method and HTTP version come first.
    #[test]
    fn method_and_http_version() {
        let headers = request(&valid());
        assert_eq!(check_upgrade(&Method::POST, Version::HTTP_11, &headers), Err(UpgradeRefusal::Method));
        for version in [Version::HTTP_09, Version::HTTP_10, Version::HTTP_2, Version::HTTP_3] {
            assert_eq!(check_upgrade(&Method::GET, version, &headers), Err(UpgradeRefusal::HttpVersion), "{version:?}");
        }
        assert_eq!(check_upgrade(&Method::POST, Version::HTTP_10, &HeaderMap::new()), Err(UpgradeRefusal::Method));
    }

    /// Without `Upgrade: websocket` and an `upgrade` token in `Connection`, it is no upgrade.
    #[test]
    fn upgrade_and_connection_tokens() {
        for headers in [
            with("upgrade", &[]),
            with("upgrade", &["h2c"]),
            with("upgrade", &["websockets"]),
            with("connection", &[]),
            with("connection", &["keep-alive"]),
            with("connection", &["upgraded"]),
            HeaderMap::new(),
        ] {
            assert_eq!(check(&headers), Err(UpgradeRefusal::NotAnUpgrade), "{headers:?}");
        }
    }

    /// The key must be there once and be the base64 of exactly 16 bytes.
    #[test]
    fn key() {
        assert_eq!(check(&with("sec-websocket-key", &[])), Err(UpgradeRefusal::MissingKey));
        for bad in [
            "",
            " ",
            "abc",
            "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZQ=",      // half the padding
            "dGhlIHNhbXBsZSBub25jZR==",     // non-zero trailing bits
            "dGhl-HNhbXBsZSBub25jZQ==",     // URL-safe alphabet
            "dGhlIHNhbXBsZSBub25jZQ== ",    // trailing space (hyper trims; we do not need to)
            "dGhlIHNhbXBsZSBub25jZQ==dGhl", // trailing garbage
        ] {
            assert_eq!(check(&with("sec-websocket-key", &[bad])), Err(UpgradeRefusal::BadKey), "{bad:?}");
        }
        let two = with("sec-websocket-key", &["dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="]);
        assert_eq!(check(&two), Err(UpgradeRefusal::BadKey));
    }

    /// Exactly the base64 encodings of 16 bytes are keys: every length from 0 to 32 bytes, over
    /// seeded random contents, is accepted if and only if it is 16 bytes long.
    #[test]
    fn keys_are_exactly_the_base64_of_16_bytes() {
        let mut rng = mt_testkit::Rng::new(0x5eed_0016);
        for length in 0..=32usize {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..length).map(|_| rng.next_u64() as u8).collect();
                let encoded = base64(&bytes);
                assert_eq!(is_base64_of_16_bytes(encoded.as_bytes()), length == 16, "{length} bytes: {encoded}");
            }
        }
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        // Every first-22 character and every last-data character, one at a time.
        let sample = *b"dGhlIHNhbXBsZSBub25jZQ==";
        for position in 0..24 {
            for byte in 0..=255u8 {
                let mut key = sample;
                key[position] = byte;
                let expected = match position {
                    0..=20 => ALPHABET.contains(&byte),
                    21 => b"AQgw".contains(&byte),
                    _ => byte == b'=',
                };
                assert_eq!(is_base64_of_16_bytes(&key), expected, "byte {byte:#04x} at {position}");
            }
        }
    }

    /// The version must be there once and be exactly 13; the refusal carries
    /// `Sec-WebSocket-Version: 13`.
    #[test]
    fn version() {
        for values in [&[][..], &["8"], &["14"], &["13, 8"], &[""], &["13", "13"], &[" 13x"]] {
            assert_eq!(check(&with("sec-websocket-version", values)), Err(UpgradeRefusal::Version), "{values:?}");
        }
        let refusal = UpgradeRefusal::Version;
        assert_eq!(refusal.status(), StatusCode::UPGRADE_REQUIRED);
        assert!(refusal.headers().contains(&(SEC_WEBSOCKET_VERSION, "13")));
    }

    /// Every refusal's answer: a 4xx, and a 426 always says what to upgrade to.
    #[test]
    fn answers() {
        use UpgradeRefusal::*;
        for refusal in [Method, HttpVersion, NotAnUpgrade, MissingKey, BadKey, Version] {
            assert!(refusal.status().is_client_error(), "{refusal:?}");
            if refusal.status() == StatusCode::UPGRADE_REQUIRED {
                assert!(refusal.headers().contains(&(UPGRADE, "websocket")), "{refusal:?}");
            }
        }
        assert_eq!(Method.headers(), &[(hyper::header::ALLOW, "GET")]);
    }
}
