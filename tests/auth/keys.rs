//! Public keys from a JWKS file: RS256, ES256 and EdDSA tokens, each verified by the key its
//! `kid` names; rotation by rewriting the file, without a restart; and `mt-stream token`.

use std::process::Command;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::jwt::{self, b64, claims, hmac_sha256, EcKey, EdKey, RsaKey};
use super::*;

/// Two keys in the set, then the old one removed: its tokens are refused from the next read of
/// the file on, the new one's still accepted, and the connection never restarted the hub.
#[tokio::test]
async fn rotation_without_a_restart() {
    let dir = tempdir();
    let old = EcKey::generate("2026-11-old");
    let new = EdKey::generate("2026-12-new");
    let rsa = RsaKey::generate(dir.path(), "rsa-1");
    let file = dir.path().join("keys.jwks");
    std::fs::write(&file, jwt::jwks(&[old.jwk(), new.jwk(), rsa.jwk()])).unwrap();
    let hub = HubProcess::start(&[
        ("MT_AUTH_PUBLIC_KEYS_FILE", file.to_str().unwrap()),
        ("MT_AUTH_KEYS_RELOAD_SECONDS", "1"),
    ]);
    assert_eq!(hub.metric("mt_stream_auth_public_keys").await, 3.0);
    let grants = claims("agent-7", &["agent:7:*"], 600);
    let mut by_old = assert_accepted(&hub, &old.token(&grants)).await;
    assert_accepted(&hub, &new.token(&grants)).await;
    assert_accepted(&hub, &rsa.token(&grants)).await;
    // An ES256 signature under the EdDSA key's kid does not verify.
    let swapped = old.token(&grants).replacen(
        &b64(json!({"alg": "ES256", "kid": old.kid}).to_string().as_bytes()),
        &b64(json!({"alg": "ES256", "kid": new.kid}).to_string().as_bytes()),
        1,
    );
    assert_refused(&hub, &swapped, "algorithm does not match the key").await;

    // A broken file is not taken: the keys in use stay.
    std::fs::write(&file, "{not json").unwrap();
    wait_for("the failed reload to be counted", || async {
        (hub.metric("mt_stream_auth_key_reload_failures_total").await >= 1.0).then_some(())
    })
    .await;
    assert_accepted(&hub, &old.token(&grants)).await;

    std::fs::write(&file, jwt::jwks(&[new.jwk()])).unwrap();
    wait_for("the rotated file to be read", || async {
        (hub.metric("mt_stream_auth_public_keys").await == 1.0).then_some(())
    })
    .await;
    assert_refused(&hub, &old.token(&grants), "unknown key").await;
    assert_accepted(&hub, &new.token(&grants)).await;

    // A different key under the same kid (the set's shape unchanged) is taken too.
    let replacement = EdKey::generate("2026-12-new");
    std::fs::write(&file, jwt::jwks(&[replacement.jwk()])).unwrap();
    let token = replacement.token(&grants);
    wait_for("the replaced key to verify", || async {
        // Refused (4001) until the hub has read the file, accepted after.
        let mut client = connect(&hub, &format!("?token={token}")).await;
        let first = tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut client)).await.ok().flatten();
        matches!(first, Some(Ok(Message::Text(text))) if text.contains("\"authenticated\"")).then_some(())
    })
    .await;
    assert_refused(&hub, &new.token(&grants), "bad signature").await;
    // A connection verified before the rotation keeps its token until it expires.
    send_json(&mut by_old, json!({"op": "subscribe", "channels": ["agent:7:log"]})).await;
    assert_eq!(next_json(&mut by_old).await["op"], "subscribed");
}

/// A keys file that cannot be used stops start-up with a message naming the setting; so does a
/// short HMAC secret, without echoing it.
#[test]
fn bad_key_settings_stop_start_up() {
    let dir = tempdir();
    let file = dir.path().join("keys.jwks");
    std::fs::write(&file, jwt::jwks(&[json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"})])).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .arg("serve")
        .env_clear()
        .env("MT_AUTH_PUBLIC_KEYS_FILE", &file)
        .env("MT_AUTH_HMAC_SECRET", "too-short-secret")
        .env("MT_PUBLIC_CHANNELS", "town:*:chat")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("MT_AUTH_PUBLIC_KEYS_FILE: key \"s\": symmetric keys do not belong"), "{stderr}");
    assert!(stderr.contains("MT_AUTH_HMAC_SECRET: must be at least 32 bytes; got 16 bytes"), "{stderr}");
    assert!(stderr.contains("MT_PUBLIC_CHANNELS: \"town:*:chat\" is not a channel grant"), "{stderr}");
    assert!(!stderr.contains("too-short-secret"), "{stderr}");
}

/// `mt-stream token` mints tokens the hub accepts: HS256 whose signature checks out by hand,
/// and ES256 with a PEM key made by openssl.
#[tokio::test]
async fn minted_tokens_verify() {
    let mint = |args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_mt-stream"))
            .arg("token")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let token = mint(
        &["--sub", "42", "--channels", "user:42:*,builds", "--ttl", "1h"],
        &[("MT_AUTH_HMAC_SECRET", jwt::SECRET)],
    );
    let (input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(signature, b64(&hmac_sha256(jwt::SECRET.as_bytes(), input.as_bytes())));
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, input.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["channels"], json!(["user:42:*", "builds"]));
    assert_eq!(payload["aud"], "mt-stream");
    assert_eq!(payload["exp"].as_u64().unwrap() - payload["iat"].as_u64().unwrap(), 3600);
    let hub = hmac_hub(&[]);
    assert_accepted(&hub, &token).await;

    let dir = tempdir();
    let pem = dir.path().join("ec.pem");
    let status = Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pem.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let der = Command::new("openssl")
        .args(["pkey", "-in", pem.to_str().unwrap(), "-pubout", "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    let point = &der[der.len() - 65..];
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "backend-1", "x": b64(&point[1..33]), "y": b64(&point[33..])});
    let file = dir.path().join("keys.jwks");
    std::fs::write(&file, jwt::jwks(&[jwk])).unwrap();
    let es256 = mint(
        &["--sub", "7", "--channels", "agent:7:*", "--key-file", pem.to_str().unwrap(), "--kid", "backend-1"],
        &[],
    );
    let keys_hub = HubProcess::start(&[("MT_AUTH_PUBLIC_KEYS_FILE", file.to_str().unwrap())]);
    assert_accepted(&keys_hub, &es256).await;
}
