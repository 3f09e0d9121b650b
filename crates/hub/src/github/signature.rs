//! Webhook signatures: `X-Hub-Signature-256: sha256=<hex>` is the HMAC-SHA256 of the raw body
//! with the webhook's secret. Checked before anything in the body is read, with ring's
//! constant-time comparison.

use ring::hmac;

/// Why a delivery's signature was refused (the 401's body says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body: check MT_GITHUB_WEBHOOK_SECRET")]
    Mismatch,
}

/// Whether `header` (the raw `X-Hub-Signature-256` value) signs `body` with `key`.
pub fn verify(key: &hmac::Key, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header.strip_prefix(b"sha256=").ok_or(SignatureError::Malformed)?;
    let tag = decode_hex::<32>(hex).ok_or(SignatureError::Malformed)?;
    hmac::verify(key, body, &tag).map_err(|_| SignatureError::Mismatch)
}

/// `N` bytes from exactly `2N` hex digits (either case).
fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The header value for `body` (tests and tools that send deliveries).
pub fn sign(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented test vector, and a one-bit change of the body, of the signature and
    /// of the secret.
    #[test]
    fn githubs_test_vector() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"It's a Secret to Everybody");
        let header = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify(&key, Some(header), b"Hello, World!"), Ok(()));
        assert_eq!(sign(&key, b"Hello, World!").as_bytes(), header);
        assert_eq!(verify(&key, Some(header), b"Hello, World\""), Err(SignatureError::Mismatch));
        let mut flipped = header.to_vec();
        *flipped.last_mut().unwrap() = b'6';
        assert_eq!(verify(&key, Some(&flipped), b"Hello, World!"), Err(SignatureError::Mismatch));
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"It's a Secret to Everybodz");
        assert_eq!(verify(&other, Some(header), b"Hello, World!"), Err(SignatureError::Mismatch));
        assert_eq!(verify(&key, None, b"Hello, World!"), Err(SignatureError::Missing));
        assert_eq!(verify(&key, Some(&header[7..]), b"Hello, World!"), Err(SignatureError::Malformed));
        assert_eq!(verify(&key, Some(b"sha256=zz"), b"Hello, World!"), Err(SignatureError::Malformed));
        let upper = header.to_ascii_uppercase();
        assert_eq!(verify(&key, Some(&[b"sha256=", &upper[7..]].concat()), b"Hello, World!"), Ok(()));
    }
}
