//! Every check a token can fail closes the connection with 4001 and a reason naming the check,
//! and is counted by reason.

use serde_json::json;

use super::jwt::{self, b64, claims, hmac_sha256, now, signed, RsaKey};
use super::*;

/// Expired, not yet valid, wrong audience, tampered, `alg: none`, unknown `kid`, oversized,
/// garbage: each is refused with its own reason.
#[tokio::test]
async fn each_failed_check_closes_with_its_reason() {
    let hub = hmac_hub(&[]);
    let valid = claims("42", &["user:42:*"], 600);
    assert_accepted(&hub, &jwt::hs256(&valid)).await;

    let mut expired = valid.clone();
    expired["exp"] = json!(now() - 120);
    assert_refused(&hub, &jwt::hs256(&expired), "token expired").await;

    let mut early = valid.clone();
    early["nbf"] = json!(now() + 300);
    assert_refused(&hub, &jwt::hs256(&early), "token not yet valid").await;

    let mut elsewhere = valid.clone();
    elsewhere["aud"] = json!("another-service");
    assert_refused(&hub, &jwt::hs256(&elsewhere), "wrong audience").await;

    let mut no_exp = valid.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_refused(&hub, &jwt::hs256(&no_exp), "malformed token").await;

    // The payload changed after signing: more channels than were granted.
    let token = jwt::hs256(&valid);
    let parts: Vec<&str> = token.split('.').collect();
    let mut widened = valid.clone();
    widened["channels"] = json!(["*"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(widened.to_string().as_bytes()), parts[2]);
    assert_refused(&hub, &tampered, "bad signature").await;

    // alg none, with and without an empty signature.
    let none = signed(&json!({"alg": "none", "typ": "JWT"}), &valid, |_| Vec::new());
    assert_refused(&hub, &none, "malformed token").await;
    assert_refused(&hub, none.trim_end_matches('.'), "malformed token").await;

    let unknown_kid =
        signed(&json!({"alg": "HS256", "kid": "nobody"}), &valid, |input| hmac_sha256(jwt::SECRET.as_bytes(), input));
    assert_refused(&hub, &unknown_kid, "unknown key").await;

    // HS512 with the right secret: the key verifies HS256 only.
    let hs512 = signed(&json!({"alg": "HS512"}), &valid, |input| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, jwt::SECRET.as_bytes());
        ring::hmac::sign(&key, input).as_ref().to_vec()
    });
    assert_refused(&hub, &hs512, "algorithm does not match the key").await;

    let mut huge = valid.clone();
    huge["padding"] = json!("x".repeat(9000));
    assert_refused(&hub, &jwt::hs256(&huge), "token over 8 KiB").await;
    assert_refused(&hub, "not-a-token", "malformed token").await;

    let metrics = hub.admin_get("/metrics").await.1;
    for (reason, count) in [
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("wrong_audience", 1.0),
        ("malformed", 4.0),
        ("bad_signature", 1.0),
        ("unknown_key", 1.0),
        ("wrong_algorithm", 1.0),
        ("too_large", 1.0),
    ] {
        assert_eq!(labelled(&metrics, "mt_stream_auth_failures_total", reason), count, "{reason}");
    }
    assert_eq!(metric_value(&metrics, "mt_stream_tokens_verified_total"), 1.0);
    wait_for("11 closes counted as unauthorized", || async {
        let metrics = hub.admin_get("/metrics").await.1;
        (labelled(&metrics, "mt_stream_connections_closed_total", "unauthorized") == 11.0).then_some(())
    })
    .await;
}

/// Key confusion: an HS256 token signed with the RSA public key's PEM text, naming the RSA
/// key's `kid` or none, is refused whether or not an HMAC secret is configured.
#[tokio::test]
async fn an_hmac_token_signed_with_the_public_key_is_refused() {
    let dir = tempdir();
    let rsa = RsaKey::generate(dir.path(), "rsa-1");
    let keys_file = dir.path().join("keys.jwks");
    std::fs::write(&keys_file, jwt::jwks(&[rsa.jwk()])).unwrap();
    let valid = claims("42", &["*"], 600);
    let confused = |kid: Option<&str>| {
        let header = match kid {
            Some(kid) => json!({"alg": "HS256", "kid": kid}),
            None => json!({"alg": "HS256"}),
        };
        signed(&header, &valid, |input| hmac_sha256(rsa.public_pem.as_bytes(), input))
    };
    let keys_only = HubProcess::start(&[("MT_AUTH_PUBLIC_KEYS_FILE", keys_file.to_str().unwrap())]);
    assert_accepted(&keys_only, &rsa.token(&valid)).await;
    assert_refused(&keys_only, &confused(Some("rsa-1")), "algorithm does not match the key").await;
    assert_refused(&keys_only, &confused(None), "unknown key").await;
    let both = HubProcess::start(&[
        ("MT_AUTH_PUBLIC_KEYS_FILE", keys_file.to_str().unwrap()),
        ("MT_AUTH_HMAC_SECRET", jwt::SECRET),
    ]);
    assert_refused(&both, &confused(Some("rsa-1")), "algorithm does not match the key").await;
    assert_refused(&both, &confused(None), "bad signature").await;
    // An RS256 token naming no kid is not checked against the HMAC secret either.
    let no_kid = rsa.token(&valid).replacen(
        &b64(json!({"alg": "RS256", "kid": "rsa-1"}).to_string().as_bytes()),
        &b64(br#"{"alg":"RS256"}"#),
        1,
    );
    assert_refused(&both, &no_kid, "algorithm does not match the key").await;
}
