//! Verifying connection tokens (`mt_hub::auth::Verifier::verify`), with an HMAC secret and a
//! JWKS of one EC P-256 public key configured, as a hub with both keys is.
//!
//! Input: arbitrary text as a token. Checked: no panic, and nothing is accepted: the fuzzer
//! knows neither the secret nor the private key, so an accepted input would be a forgery (or a
//! check that lets a token through unsigned: `alg: none`, an algorithm the key does not have,
//! a token naming no key). The seeds are tokens of the right shape signed with other keys.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mt_hub::auth::{AuthSettings, PublicKeys, PublicKeysFile, Token, Verifier};

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"01kU6qAAJprwqgaSsu1Ugf2xbLMp6bnO71Uwd3Qzzek","y":"N72AOLhhwOPbVDDijkyFdBQycf8PDd7azDvIa4K8u_g"}]}"#;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let settings = AuthSettings {
        hmac_secret: Some("fuzz-secret-the-fuzzer-does-not-know-0123".parse().expect("a long enough secret")),
        public_keys: Some(PublicKeysFile {
            path: "keys.jwks".into(),
            keys: PublicKeys::parse(JWKS).expect("the JWKS parses"),
        }),
        audience: "mt-stream".into(),
        reload_interval: Duration::from_secs(30),
        public_channels: Default::default(),
    };
    Verifier::new(&settings).expect("keys are configured")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A time when the seeds' claims are current, so only the signature stands in the way.
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let verdict = VERIFIER.verify(&Token(text.to_owned()), now);
    assert!(verdict.is_err(), "accepted a token the fuzzer made: {verdict:?}");
});
