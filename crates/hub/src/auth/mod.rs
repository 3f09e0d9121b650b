//! Who may read which channel: the verification of connection tokens (JWT, RFC 7519) and the
//! grants they carry.
//!
//! - [`Access`] is the hub's one answer to "may this connection read this channel?". With no
//!   key configured it is [`Access::Open`]: every channel is public (today's behaviour for a
//!   dev machine; the hub warns at start-up and in `/readyz`). With a key it is
//!   [`Access::Enforced`]: channels matching `MT_PUBLIC_CHANNELS` need no grant, every other
//!   one needs a grant in the connection's token.
//! - [`Verifier`] checks a token: size, header, the key its `kid` names (or the HMAC secret),
//!   signature, `exp` (required), `nbf`, `aud`; and turns the claims into an [`Identity`].
//!   A failure is an [`AuthFailure`], which is the reason of the `4001` close and the label of
//!   `mt_stream_auth_failures_total`, and never contains the token.
//! - Grants are checked when a connection subscribes, never on the fan-out path.
//!
//! The per-connection side (the `auth` op, the 10 s deadline, `token_expiring`, the close at
//! `exp`) is `crate::session::auth`; minting for `mt-stream token` is [`mint`].

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::Deserialize;

use crate::protocol::ChannelName;

mod grant;
mod keys;
pub mod mint;
pub mod reload;

pub use grant::{BadGrant, Grant, Grants};
pub use keys::{HmacSecret, PublicKeys, PublicKeysFile, VerifyingKey, MIN_HMAC_SECRET};

/// Longest token accepted, in bytes; a longer one is refused before it is parsed.
pub const MAX_TOKEN: usize = 8 * 1024;
/// Default of `MT_AUTH_AUDIENCE`.
pub const DEFAULT_AUDIENCE: &str = "mt-stream";

/// A token as a client sent it. Its `Debug` never shows it, so no log line can.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// Which check a token failed; the reason of the `4001` close and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// A channel needing a grant was asked for and no token came within the deadline.
    Missing,
    /// Over [`MAX_TOKEN`] bytes.
    TooLarge,
    /// Not a JWT, an unknown or `none` algorithm, missing `exp`/`aud`, or claims of the wrong shape.
    Malformed,
    /// The `kid` names no configured key (or there is none and no HMAC secret is set).
    UnknownKey,
    /// The token's `alg` is not the algorithm of the key it names.
    WrongAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    /// A refresh carried a different `sub` than the connection's token.
    SubjectChanged,
}

impl AuthFailure {
    pub const ALL: [Self; 10] = [
        Self::Missing,
        Self::TooLarge,
        Self::Malformed,
        Self::UnknownKey,
        Self::WrongAlgorithm,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongAudience,
        Self::SubjectChanged,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::SubjectChanged => "subject_changed",
        }
    }

    /// The close reason the client reads (at most 123 bytes, as a close reason must be).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "unauthorized: no token within 10 s",
            Self::TooLarge => "unauthorized: token over 8 KiB",
            Self::Malformed => "unauthorized: malformed token",
            Self::UnknownKey => "unauthorized: unknown key",
            Self::WrongAlgorithm => "unauthorized: algorithm does not match the key",
            Self::BadSignature => "unauthorized: bad signature",
            Self::Expired => "unauthorized: token expired",
            Self::NotYetValid => "unauthorized: token not yet valid",
            Self::WrongAudience => "unauthorized: wrong audience",
            Self::SubjectChanged => "unauthorized: refresh for another sub",
        }
    }
}

impl EncodeLabelValue for AuthFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Who a verified token speaks for, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim (empty if absent): logged, compared on refresh.
    pub subject: String,
    pub grants: Grants,
    /// The `exp` claim.
    pub expires_at: SystemTime,
}

/// The claims the hub reads; `aud`, `exp`, `nbf` are checked by the verifier itself.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    channels: Vec<String>,
}

/// The verification settings (`MT_AUTH_*`).
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub hmac_secret: Option<HmacSecret>,
    pub public_keys: Option<PublicKeysFile>,
    pub audience: String,
    /// How often the public keys file is read again (rotation without a restart).
    pub reload_interval: Duration,
    pub public_channels: Grants,
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    /// Replaced whole when the keys file changes ([`reload`]).
    public_keys: RwLock<Arc<PublicKeys>>,
    audience: String,
}

impl Verifier {
    /// `None` when no key is configured.
    pub fn new(settings: &AuthSettings) -> Option<Self> {
        if settings.hmac_secret.is_none() && settings.public_keys.is_none() {
            return None;
        }
        Some(Self {
            hmac: settings.hmac_secret.as_ref().map(|secret| DecodingKey::from_secret(&secret.0)),
            public_keys: RwLock::new(Arc::new(
                settings.public_keys.as_ref().map(|file| file.keys.clone()).unwrap_or_default(),
            )),
            audience: settings.audience.clone(),
        })
    }

    /// The public keys in use now.
    pub fn public_keys(&self) -> Arc<PublicKeys> {
        Arc::clone(&self.public_keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a new set of public keys in use.
    pub fn replace_public_keys(&self, keys: PublicKeys) {
        *self.public_keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Verifies `token` at `now`.
    pub fn verify(&self, token: &Token, now: SystemTime) -> Result<Identity, AuthFailure> {
        let token = token.0.as_str();
        if token.len() > MAX_TOKEN {
            return Err(AuthFailure::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        let public_keys;
        let (algorithm, key) = match &header.kid {
            Some(kid) => {
                public_keys = self.public_keys();
                let found = public_keys.get(kid).ok_or(AuthFailure::UnknownKey)?;
                (found.algorithm, &found.key)
            }
            None => (Algorithm::HS256, self.hmac.as_ref().ok_or(AuthFailure::UnknownKey)?),
        };
        if header.alg != algorithm {
            return Err(AuthFailure::WrongAlgorithm);
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // The library's own clock check would read the system clock; `now` is checked below,
        // after the signature, so a forged token learns nothing about its claims.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // Claims of the wrong shape (a `sub` or `nbf` of another type) fail here, as malformed.
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(failure_of)?.claims;
        let seconds_now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if claims.exp <= seconds_now {
            return Err(AuthFailure::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > seconds_now) {
            return Err(AuthFailure::NotYetValid);
        }
        let grants =
            Grants::from_patterns(claims.channels.iter().map(String::as_str)).map_err(|_| AuthFailure::Malformed)?;
        Ok(Identity {
            subject: claims.sub.unwrap_or_default(),
            grants,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

fn failure_of(error: jsonwebtoken::errors::Error) -> AuthFailure {
    match error.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::Crypto(_) => AuthFailure::BadSignature,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidAlgorithm => AuthFailure::WrongAlgorithm,
        _ => AuthFailure::Malformed,
    }
}

/// May a connection read a channel: the hub's access policy.
pub enum Access {
    /// No key configured: every channel is public.
    Open,
    Enforced {
        verifier: Arc<Verifier>,
        public: Grants,
    },
}

impl Access {
    pub fn new(settings: &AuthSettings) -> Self {
        match Verifier::new(settings) {
            None => Self::Open,
            Some(verifier) => Self::Enforced { verifier: Arc::new(verifier), public: settings.public_channels.clone() },
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    /// Whether `channel` may be read by a connection with `identity` (`None`: no token yet).
    pub fn allows(&self, identity: Option<&Identity>, channel: &ChannelName) -> bool {
        match self {
            Self::Open => true,
            Self::Enforced { public, .. } => {
                public.allows(channel) || identity.is_some_and(|identity| identity.grants.allows(channel))
            }
        }
    }

    /// Whether a connection without a token can read anything at all.
    pub fn has_public_channels(&self) -> bool {
        match self {
            Self::Open => true,
            Self::Enforced { public, .. } => !public.is_empty(),
        }
    }

    /// The warning for an open hub, shown at start-up and by `/readyz`.
    pub const OPEN_WARNING: &'static str =
        "no MT_AUTH_HMAC_SECRET or MT_AUTH_PUBLIC_KEYS_FILE: every channel is public, tokens are not checked";
}

#[cfg(test)]
mod tests;
