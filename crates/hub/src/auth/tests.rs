//! Token verification: every check refuses what it must, and names itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn settings() -> AuthSettings {
    AuthSettings {
        hmac_secret: Some(SECRET.parse().unwrap()),
        public_keys: None,
        audience: DEFAULT_AUDIENCE.into(),
        reload_interval: Duration::from_secs(30),
        public_channels: "builds,town:*".parse().unwrap(),
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn hs256(claims: serde_json::Value) -> Token {
    Token(encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap())
}

fn verifier() -> Verifier {
    Verifier::new(&settings()).unwrap()
}

#[test]
fn a_valid_token_gives_its_identity() {
    let token = hs256(json!({"sub": "42", "aud": "mt-stream", "exp": 1_800_000_060, "channels": ["user:42:*"]}));
    let identity = verifier().verify(&token, now()).unwrap();
    assert_eq!(identity.subject, "42");
    assert_eq!(identity.expires_at, UNIX_EPOCH + Duration::from_secs(1_800_000_060));
    assert!(identity.grants.allows(&ChannelName::new("user:42:feed").unwrap()));
    assert!(!identity.grants.allows(&ChannelName::new("user:43:feed").unwrap()));
}

#[test]
fn each_check_names_itself() {
    let v = verifier();
    let at = |claims| v.verify(&hs256(claims), now());
    assert_eq!(at(json!({"aud": "mt-stream", "exp": 1_800_000_000})), Err(AuthFailure::Expired));
    assert_eq!(
        at(json!({"aud": "mt-stream", "exp": 1_800_000_060, "nbf": 1_800_000_001})),
        Err(AuthFailure::NotYetValid)
    );
    assert_eq!(at(json!({"aud": "other", "exp": 1_800_000_060})), Err(AuthFailure::WrongAudience));
    assert_eq!(at(json!({"aud": "mt-stream"})), Err(AuthFailure::Malformed));
    assert_eq!(at(json!({"exp": 1_800_000_060})), Err(AuthFailure::Malformed));
    assert_eq!(at(json!({"aud": "mt-stream", "exp": 1_800_000_060, "channels": ["a*b"]})), Err(AuthFailure::Malformed));
    assert_eq!(v.verify(&Token("not a token".into()), now()), Err(AuthFailure::Malformed));
    assert_eq!(v.verify(&Token("x".repeat(MAX_TOKEN + 1)), now()), Err(AuthFailure::TooLarge));
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"aud": "mt-stream", "exp": 1_800_000_060}),
        &EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    assert_eq!(v.verify(&Token(other_key), now()), Err(AuthFailure::BadSignature));
    let mut with_kid = Header::new(Algorithm::HS256);
    with_kid.kid = Some("nope".into());
    let unknown = encode(
        &with_kid,
        &json!({"aud": "mt-stream", "exp": 1_800_000_060}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(v.verify(&Token(unknown), now()), Err(AuthFailure::UnknownKey));
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &json!({"aud": "mt-stream", "exp": 1_800_000_060}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(v.verify(&Token(hs512), now()), Err(AuthFailure::WrongAlgorithm));
}

#[test]
fn access_public_and_granted() {
    let open = Access::Open;
    let channel = |name| ChannelName::new(name).unwrap();
    assert!(open.allows(None, &channel("user:1:x")));
    let enforced = Access::new(&settings());
    assert!(!enforced.is_open());
    assert!(enforced.allows(None, &channel("builds")));
    assert!(enforced.allows(None, &channel("town:square")));
    assert!(!enforced.allows(None, &channel("user:1:x")));
    let identity = Identity { subject: "1".into(), grants: "user:1:*".parse().unwrap(), expires_at: now() };
    assert!(enforced.allows(Some(&identity), &channel("user:1:x")));
    assert!(!enforced.allows(Some(&identity), &channel("user:10")));
    let mut no_keys = settings();
    no_keys.hmac_secret = None;
    assert!(Access::new(&no_keys).is_open());
}

#[test]
fn tokens_never_print() {
    let token = Token("eyJsecret.payload.signature".into());
    assert!(!format!("{token:?}").contains("secret"));
    let secret: HmacSecret = SECRET.parse().unwrap();
    assert!(!format!("{secret:?}").contains(SECRET));
    assert!("short".parse::<HmacSecret>().unwrap_err().contains("at least 32 bytes"));
}
