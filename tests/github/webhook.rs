//! `POST /github/webhook`: signatures, refusals, once-only publishing across pods, history.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// GitHub's documented vector passes the signature check (the hub then refuses the body, which
/// is not JSON, with 400), and a one-bit change of the body or of the signature is a 401;
/// unsigned, oversized and non-JSON deliveries get 401, 413 and 415; each is counted. A hub
/// without a secret has no webhook route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_test_vector_and_refusals() {
    let hub = HubProcess::start(&[("MT_GITHUB_WEBHOOK_SECRET", SECRET)]);
    let vector = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let post = |body: &'static [u8], signature: Option<&'static str>, content_type: &'static str| {
        let public = hub.public;
        async move {
            let mut headers = vec![
                ("Content-Type", content_type),
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ];
            if let Some(signature) = signature {
                headers.push(("X-Hub-Signature-256", signature));
            }
            http(public, "POST", "/github/webhook", &headers, body).await
        }
    };
    let (status, body) = post(b"Hello, World!", Some(vector), "application/json").await;
    assert_eq!((status, body.contains("not JSON")), (400, true), "the vector's signature is accepted: {body}");
    // '!' (0x21) to '"' (0x22): one bit of the body.
    let (status, body) = post(b"Hello, World\"", Some(vector), "application/json").await;
    assert_eq!((status, body.contains("does not match")), (401, true), "{body}");
    // The last hex digit 7 to 6: one bit of the signature.
    let flipped = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e16";
    assert_eq!(post(b"Hello, World!", Some(flipped), "application/json").await.0, 401);
    let (status, body) = post(b"Hello, World!", None, "application/json").await;
    assert_eq!((status, body.contains("missing X-Hub-Signature-256")), (401, true), "{body}");
    let (status, body) = post(b"payload=%7B%7D", Some(vector), "application/x-www-form-urlencoded").await;
    assert_eq!((status, body.contains("application/json")), (415, true), "{body}");

    // A declared length over the limit is refused before the body is read.
    let mut stream = tokio::net::TcpStream::connect(hub.public).await.unwrap();
    let head = "POST /github/webhook HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n\
                Content-Length: 5000000\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: big\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer));

    for (result, count) in [("bad_signature", 3.0), ("too_large", 1.0), ("unsupported_type", 1.0), ("bad_request", 1.0)]
    {
        let series = format!("mt_stream_github_webhook_deliveries_total{{result=\"{result}\"}}");
        assert_eq!(sample(&hub, &series).await, count, "{series}");
    }
    assert_eq!(sample(&hub, "mt_stream_github_webhook_deliveries_total{result=\"published\"}").await, 0.0);

    let off = HubProcess::start(&[]);
    let (status, body) = http(off.public, "POST", "/github/webhook", &[], b"{}").await;
    assert_eq!((status, body.contains("MT_GITHUB_WEBHOOK_SECRET")), (404, true), "{body}");
}

/// Deliveries to two pods sharing Redis reach a client of either pod once each, in order, on
/// the repository's channel and on its kind's (`:pulls`, `:pushes`, `:ci`); a redelivery to the
/// other pod is answered 200 and not published; the answer's id is the event's id in history,
/// and a client resumes after it with `since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_published_once_in_order_and_resumable() {
    let redis = RedisProcess::start();
    let env = [("REDIS_URL", redis.url()), ("MT_GITHUB_WEBHOOK_SECRET", SECRET.to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (a, b) = (HubProcess::start(&env), HubProcess::start(&env));
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    let channels = [
        "github:monkeytown.web",
        "github:monkeytown.web:pulls",
        "github:monkeytown.web:pushes",
        "github:monkeytown.web:ci",
    ];
    let mut client = b.subscriber(&channels).await;
    let probe = redis.client().await;
    for channel in channels {
        wait_numsub(&probe, &format!("mt:{channel}"), 1).await;
    }

    assert_eq!(deliver(&a, "ping", "d-ping", &fixture("webhook_ping.json")).await, (200, "pong\n".into()));
    let (status, answer) = deliver(&a, "pull_request", "d-pr", &fixture("webhook_pull_request.json")).await;
    assert_eq!(status, 202, "{answer}");
    let pr_id = answer.trim().strip_prefix("published ").expect("the answer names the id").to_owned();
    assert_eq!(deliver(&a, "push", "d-push", &fixture("webhook_push.json")).await.0, 202);
    assert_eq!(deliver(&b, "workflow_run", "d-ci", &fixture("webhook_workflow_run.json")).await.0, 202);
    // GitHub redelivers the pull request to the other pod.
    let (status, answer) = deliver(&b, "pull_request", "d-pr", &fixture("webhook_pull_request.json")).await;
    assert_eq!((status, answer.contains("duplicate")), (200, true), "{answer}");
    // A last delivery: whatever arrives before it is all that was published.
    assert_eq!(deliver(&a, "push", "d-last", &fixture("webhook_push.json")).await.0, 202);

    let received = events(&mut client, 8).await;
    let on = |channel: &str| -> Vec<Value> { received.iter().filter(|e| e["channel"] == channel).cloned().collect() };
    let repo = on("github:monkeytown.web");
    let kinds: Vec<&str> = repo.iter().map(|e| e["data"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["pull_request", "push", "workflow_run", "push"], "each delivery once, in order: {repo:?}");
    assert_eq!(on("github:monkeytown.web:pulls").len(), 1);
    assert_eq!(on("github:monkeytown.web:pushes").len(), 2);
    assert_eq!(on("github:monkeytown.web:ci").len(), 1);

    let pr = &repo[0];
    assert_eq!(pr["id"], pr_id.as_str(), "the webhook's answer names the event's id");
    let data = &pr["data"];
    assert_eq!(data["action"], "opened");
    assert_eq!(data["repo"], "Monkeytown/web");
    assert_eq!(data["actor"], "ana");
    assert_eq!(data["title"], "Show build status on the dashboard");
    assert_eq!(data["url"], "https://github.com/Monkeytown/web/pull/42");
    assert_eq!(data["number"], 42);
    assert_eq!(data["via"], "webhook");
    assert_eq!(data["github_id"], "d-pr");
    assert!(!data.to_string().contains("clients never receive"), "the payload's body is not forwarded: {data}");
    let push = &repo[1]["data"];
    assert_eq!(push["ref"], "refs/heads/main");
    assert_eq!(push["sha"], "9f8e7d6c5b4a39281716151413121110090807f6");
    assert_eq!(push["title"], "Fan-out: fewer wake-ups per event");
    let ci = &repo[2]["data"];
    assert_eq!((ci["state"].as_str(), ci["conclusion"].as_str()), (Some("completed"), Some("success")));

    let duplicates = "mt_stream_github_webhook_deliveries_total{result=\"duplicate\"}";
    assert_eq!(sample(&b, duplicates).await, 1.0);
    let published = sample(&a, "mt_stream_github_events_published_total{via=\"webhook\"}").await
        + sample(&b, "mt_stream_github_events_published_total{via=\"webhook\"}").await;
    assert_eq!(published, 4.0);

    // Resume after the pull request, on the other pod.
    let url = a.ws_url(&format!("?channels=github:monkeytown.web&since={pr_id}"));
    let (mut resumed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut resumed).await["op"], "subscribed");
    let replay = recv_until(&mut resumed, 10, |m| m["op"] == "recovered").await;
    let kinds: Vec<&str> = replay.iter().filter_map(|e| e["data"]["type"].as_str()).collect();
    assert_eq!(kinds, ["push", "workflow_run", "push"], "{replay:?}");
    assert_eq!(replay.last().unwrap()["recovered"], true);
}
