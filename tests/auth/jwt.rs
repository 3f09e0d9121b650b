//! Tokens made without the hub's code: JWS compact serialisation written out here, HMAC-SHA256,
//! ECDSA P-256 and Ed25519 signatures from `ring`, RSA signatures and keys from the `openssl`
//! command. What the hub accepts is then a fact about RFC 7515/7519, not about its own minting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

pub const SECRET: &str = "test-hmac-secret-0123456789abcdef-xyz";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Standard claims for the hub's default audience, valid for `ttl` seconds, granting `channels`.
pub fn claims(sub: &str, channels: &[&str], ttl: u64) -> Value {
    json!({"sub": sub, "aud": "mt-stream", "iat": now(), "exp": now() + ttl, "channels": channels})
}

/// `header.payload.signature`, the signature made by `sign` over `header.payload`.
pub fn signed(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::sign(&key, message).as_ref().to_vec()
}

/// An HS256 token signed with the test secret.
pub fn hs256(claims: &Value) -> String {
    signed(&json!({"alg": "HS256", "typ": "JWT"}), claims, |input| hmac_sha256(SECRET.as_bytes(), input))
}

/// An ES256 key (ring), with its public JWK.
pub struct EcKey {
    pair: EcdsaKeyPair,
    pub kid: String,
}

impl EcKey {
    pub fn generate(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Self { pair, kid: kid.into() }
    }

    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    pub fn token(&self, claims: &Value) -> String {
        let rng = ring::rand::SystemRandom::new();
        signed(&json!({"alg": "ES256", "kid": self.kid}), claims, |input| {
            self.pair.sign(&rng, input).unwrap().as_ref().to_vec()
        })
    }
}

/// An Ed25519 key (ring), with its public JWK.
pub struct EdKey {
    pair: Ed25519KeyPair,
    pub kid: String,
}

impl EdKey {
    pub fn generate(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Self { pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(), kid: kid.into() }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(self.pair.public_key().as_ref())})
    }

    pub fn token(&self, claims: &Value) -> String {
        signed(&json!({"alg": "EdDSA", "kid": self.kid}), claims, |input| self.pair.sign(input).as_ref().to_vec())
    }
}

/// An RSA key made and used by the `openssl` command.
pub struct RsaKey {
    pub private_pem: PathBuf,
    /// The public key as PEM text (what a key-confusion attack signs HS256 tokens with).
    pub public_pem: String,
    modulus: Vec<u8>,
    pub kid: String,
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl {args:?} failed");
    output.stdout
}

impl RsaKey {
    pub fn generate(dir: &Path, kid: &str) -> Self {
        let private_pem = dir.join(format!("{kid}.pem"));
        let path = private_pem.to_str().unwrap();
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path], None);
        let public_pem = String::from_utf8(openssl(&["pkey", "-in", path, "-pubout"], None)).unwrap();
        let text = String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"], None)).unwrap();
        let hex = text.trim().strip_prefix("Modulus=").expect("openssl prints Modulus=");
        let mut modulus: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        while modulus.first() == Some(&0) {
            modulus.remove(0);
        }
        Self { private_pem, public_pem, modulus, kid: kid.into() }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "n": b64(&self.modulus), "e": "AQAB"})
    }

    pub fn token(&self, claims: &Value) -> String {
        let path = self.private_pem.to_str().unwrap().to_owned();
        signed(&json!({"alg": "RS256", "kid": self.kid}), claims, |input| {
            openssl(&["dgst", "-sha256", "-sign", &path], Some(input))
        })
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}
