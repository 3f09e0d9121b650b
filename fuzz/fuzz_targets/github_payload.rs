//! A GitHub webhook body, after its signature passed: `mt_hub::github::event` on arbitrary
//! bytes, as any event name.
//!
//! Input: the first line is the `X-GitHub-Event` name, the rest the body. Checked: no panic;
//! a body that parses gives an event whose channels are valid channel names (at most two, the
//! first the repository's), whose JSON reads back, whose title is one line of at most 256
//! characters; the signature of the body made with a key verifies, and with one bit of the
//! body changed does not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mt_hub::github::event::{epoch_ms, Activity, Payload};
use mt_hub::github::signature::{sign, verify};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (name, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"fuzzing secret of 32 bytes here!");
    let signature = sign(&key, body);
    assert!(verify(&key, Some(signature.as_bytes()), body).is_ok());
    if let Some(first) = body.first() {
        let mut changed = body.to_vec();
        changed[0] = first ^ 1;
        assert!(verify(&key, Some(signature.as_bytes()), &changed).is_err());
    }
    let _ = epoch_ms(&String::from_utf8_lossy(name));
    let Ok(name) = std::str::from_utf8(name) else { return };
    let Ok(payload) = serde_json::from_slice::<Payload>(body) else { return };
    let Some(activity) = Activity::from_payload(name, &payload, None, None, "webhook", "fuzz") else { return };
    let channels = activity.channels();
    assert!(channels.len() <= 2);
    if let Some(first) = channels.first() {
        assert!(first.as_str().starts_with("github:"));
        assert!(!first.as_str()[7..].contains(':'), "{first:?}");
    }
    let json: serde_json::Value = serde_json::from_slice(&activity.to_json()).expect("the event is JSON");
    assert_eq!(json["type"], name);
    if let Some(title) = &activity.title {
        assert!(title.chars().count() <= 256 && !title.contains('\n'), "{title:?}");
    }
});
