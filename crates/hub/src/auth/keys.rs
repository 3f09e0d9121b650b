//! The keys tokens are verified with: the HMAC secret (`MT_AUTH_HMAC_SECRET`) and the public
//! keys of a JWKS file (`MT_AUTH_PUBLIC_KEYS_FILE`), each bound to the one algorithm it
//! verifies. The algorithm comes from the key, never from the token.
//!
//! A JWKS key needs a `kid` (a token names the key it was signed with) and is one of: RSA
//! (RS256, or the RS384/RS512/PS256/PS384/PS512 its `alg` names), EC P-256 (ES256), EC P-384
//! (ES384), OKP Ed25519 (EdDSA). Symmetric (`oct`) keys are refused there: the one HMAC secret
//! comes from its own setting, so the public-keys file never holds a secret.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest accepted HMAC secret, in bytes (RFC 7518 §3.2: at least the hash's 256 bits).
pub const MIN_HMAC_SECRET: usize = 32;

/// The HMAC secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(pub Vec<u8>);

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacSecret(<{} bytes>)", self.0.len())
    }
}

impl std::str::FromStr for HmacSecret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < MIN_HMAC_SECRET {
            return Err(format!("must be at least {MIN_HMAC_SECRET} bytes; got {} bytes", text.len()));
        }
        Ok(Self(text.as_bytes().to_vec()))
    }
}

/// A key and the one algorithm it verifies.
#[derive(Clone)]
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The public keys of a JWKS file, by `kid`.
#[derive(Clone, Default)]
pub struct PublicKeys {
    by_kid: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("PublicKeys").field("kids", &kids).finish()
    }
}

impl PublicKeys {
    /// Parses a JWKS document; every key must be usable, or the whole file is refused (a key
    /// silently skipped would refuse its tokens later, far from the cause).
    pub fn parse(text: &str) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut by_kid = HashMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let kid = jwk.common.key_id.clone().ok_or_else(|| format!("key {index} has no \"kid\""))?;
            let algorithm =
                algorithm_of(&jwk.algorithm, jwk.common.key_algorithm).map_err(|why| format!("key {kid:?}: {why}"))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
            if by_kid.insert(kid.clone(), VerifyingKey { algorithm, key }).is_some() {
                return Err(format!("two keys have the kid {kid:?}"));
            }
        }
        Ok(Self { by_kid })
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.by_kid.get(kid)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

/// The algorithm a JWKS key verifies: from its type and curve, or from its `alg` when that is
/// one its type allows.
fn algorithm_of(parameters: &AlgorithmParameters, declared: Option<KeyAlgorithm>) -> Result<Algorithm, String> {
    let (default, allowed): (Algorithm, &[Algorithm]) = match parameters {
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
        ),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => (Algorithm::ES256, &[Algorithm::ES256]),
            EllipticCurve::P384 => (Algorithm::ES384, &[Algorithm::ES384]),
            ref other => return Err(format!("curve {other:?} is not supported (P-256, P-384)")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => (Algorithm::EdDSA, &[Algorithm::EdDSA]),
            ref other => return Err(format!("curve {other:?} is not supported (Ed25519)")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys do not belong in the public keys file; use MT_AUTH_HMAC_SECRET".into())
        }
    };
    let Some(declared) = declared else { return Ok(default) };
    let declared: Algorithm =
        format!("{declared:?}").parse().map_err(|_| format!("alg {declared:?} is not a signature algorithm"))?;
    if allowed.contains(&declared) {
        Ok(declared)
    } else {
        Err(format!("alg {declared:?} does not fit the key type"))
    }
}

/// `MT_AUTH_PUBLIC_KEYS_FILE`: the path and the keys read from it at start-up.
#[derive(Clone, Debug)]
pub struct PublicKeysFile {
    pub path: PathBuf,
    pub keys: PublicKeys,
}

impl PublicKeysFile {
    pub fn read(path: &Path) -> Result<PublicKeys, String> {
        let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// The keys of a JWKS file's contents (`path` only names it in errors).
    pub fn parse(path: &Path, text: &[u8]) -> Result<PublicKeys, String> {
        let text = std::str::from_utf8(text).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let keys = PublicKeys::parse(text)?;
        if keys.is_empty() {
            return Err(format!("{} holds no keys", path.display()));
        }
        Ok(keys)
    }
}

impl std::str::FromStr for PublicKeysFile {
    type Err = String;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        let path = PathBuf::from(path.trim());
        let keys = Self::read(&path)?;
        Ok(Self { path, keys })
    }
}
