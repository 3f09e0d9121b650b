//! A token in the query string (accepted or refused) or in an `auth` message appears in no log
//! line (at the most verbose level, stdout and stderr) and in no metric.

use std::io::Read;

use serde_json::json;

use super::jwt::{self, claims, now};
use super::*;

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let mut hub = hmac_hub(&[("RUST_LOG", "trace")]);
    let accepted = jwt::hs256(&claims("42", &["user:42:*"], 600));
    let mut expired_claims = claims("42", &["user:42:*"], 600);
    expired_claims["exp"] = json!(now() - 5);
    let refused = jwt::hs256(&expired_claims);
    let refreshed = jwt::hs256(&claims("42", &["user:42:*"], 900));
    let mut client = assert_accepted(&hub, &format!("{accepted}&channels=user:42:feed")).await;
    assert_eq!(next_json(&mut client).await["op"], "subscribed");
    send_json(&mut client, json!({"op": "auth", "token": refreshed})).await;
    assert_eq!(next_json(&mut client).await["op"], "authenticated");
    assert_refused(&hub, &refused, "token expired").await;
    // A malformed percent-encoding in the token is refused without the value.
    let (status, body) = http(
        hub.public,
        "GET",
        &format!("/ws?token={}%zz", &accepted[..40]),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let metrics = hub.admin_get("/metrics").await.1;
    drop(client);
    hub.terminate();
    let _ = hub.child.wait();
    let mut stderr = String::new();
    hub.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let stdout = wait_for("the log reader to see the end", || async {
        let lines = hub.logs.lock().unwrap();
        lines.iter().any(|l| l.contains("drain finished")).then(|| lines.join("\n"))
    })
    .await;
    assert!(
        stdout.contains("token accepted") && stdout.contains("token refused"),
        "the test sees the auth log lines:\n{stdout}"
    );
    for token in [&accepted, &refused, &refreshed] {
        let signature = token.rsplit('.').next().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        for (place, text) in [("stdout", &stdout), ("stderr", &stderr), ("metrics", &metrics), ("400 body", &body)] {
            assert!(!text.contains(signature) && !text.contains(payload), "a token is in {place}");
        }
    }
}
