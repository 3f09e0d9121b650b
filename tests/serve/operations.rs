//! Operating the hub: SIGTERM drains and exits 0, the admin endpoints (publish, probes,
//! metrics), `mt-stream publish` through the admin endpoint, bad configuration stopping
//! start-up, and JSON logs.

use std::time::Duration;

use crate::common::*;

/// SIGTERM: readiness 503 at once, upgrades refused, clients closed with 1001 spread over the
/// drain window, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let mut hub = HubProcess::start(&[("MT_DRAIN_SECONDS", "2")]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(hub.subscriber(&["x"]).await);
    }
    hub.wait_ready(200).await;
    hub.terminate();
    let reason = hub.wait_ready(503).await;
    assert!(reason.contains("draining"), "{reason}");
    let refused = tokio_tungstenite::connect_async(hub.ws_url("")).await;
    assert!(refused.is_err(), "no upgrades while draining");

    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        tasks.push(tokio::spawn(async move { (close_code(&mut client).await, start.elapsed()) }));
    }
    let mut times = Vec::new();
    for task in tasks {
        let (code, at) = task.await.unwrap();
        assert_eq!(code, 1001);
        times.push(at);
    }
    times.sort();
    let spread = times[times.len() - 1] - times[0];
    assert!(spread >= Duration::from_millis(1000), "closes spread over the window, got {spread:?}");
    let status = tokio::task::spawn_blocking(move || hub.child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// POST /publish needs the bearer token and a valid channel; probes answer; metrics carry every
/// name docs/metrics.md lists, in valid exposition format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let hub = HubProcess::start(&[]);
    assert_eq!(hub.admin_get("/healthz").await.0, 200);
    // No verification key: ready, with the warning that every channel is public.
    let (status, body) = hub.admin_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ready\nwarning: ") && body.contains("every channel is public"), "{body}");
    let (status, _) = http(hub.admin, "POST", "/publish/x", &[], b"{}").await;
    assert_eq!(status, 401);
    let (status, _) =
        http(hub.admin, "POST", "/publish/x", &[("Authorization", "Bearer wrong-token-0123456789")], b"{}").await;
    assert_eq!(status, 401);
    assert_eq!(hub.publish("bad%20name", "{}").await.0, 400);
    assert_eq!(hub.publish("fine", "{}").await.0, 202);

    let (status, body) = hub.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "mt_stream_connections",
        "mt_stream_connections_rejected_total",
        "mt_stream_messages_received_total",
        "mt_stream_deliveries_total",
        "mt_stream_slow_consumer_disconnects_total",
        "mt_stream_queued_bytes",
        "mt_stream_heartbeat_timeouts_total",
        "mt_stream_redis_connected",
        "mt_stream_delivery_lag_seconds",
        "mt_stream_queue_depth_bytes",
        "mt_stream_source_last_event_age_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name}"))
                || body.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
            "missing {name}"
        );
    }
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    assert_eq!(metric_value(&body, "mt_stream_messages_received_total"), 1.0);
    // Without an Accept for OpenMetrics: the classic format, in which every sample's name (less
    // a histogram's suffix) has its own TYPE line, counters included, and there is no EOF.
    let typed: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(typed.contains(&name) || typed.contains(&family), "{name} has no TYPE line in {body}");
    }
    assert!(body.contains("# TYPE mt_stream_deliveries_total counter") && !body.contains("# EOF"));
    // Every label value has its series from the start; the build and the process are described.
    assert!(body.contains("mt_stream_connections_closed_total{reason=\"unauthorized\"} 0"), "{body}");
    assert!(body.contains("mt_stream_resumes_total{outcome=\"truncated\"} 0"), "{body}");
    assert!(body.contains(&format!("mt_stream_build_info{{version=\"{}\",commit=\"", env!("CARGO_PKG_VERSION"))));
    assert!(metric_value(&body, "process_resident_memory_bytes") > 1e6, "{body}");
    assert!(metric_value(&body, "process_open_fds") > 2.0);
    // The embedded broker is a source that is up, and never a silent one.
    assert_eq!(metric_value(&body, "mt_stream_source_up"), 1.0);
    assert_eq!(metric_value(&body, "mt_stream_source_last_event_age_seconds"), 0.0);
    // Asked for OpenMetrics (as Prometheus asks), it gets OpenMetrics.
    let (_, openmetrics) = http(
        hub.admin,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")],
        b"",
    )
    .await;
    assert!(openmetrics.trim_end().ends_with("# EOF"));
    assert!(openmetrics.contains("# TYPE mt_stream_deliveries counter"));

    // Publishing over HTTP without a configured token is refused.
    let no_token = HubProcess::start(&[("MT_PUBLISH_TOKEN", "")]);
    assert_eq!(no_token.publish("x", "{}").await.0, 403);
}

/// `mt-stream publish` without Redis goes through a running hub's admin endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cli_through_admin_endpoint() {
    let hub = HubProcess::start(&[]);
    let mut client = hub.subscriber(&["cli"]).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args(["publish", "cli", r#"{"n":42}"#, "--admin-addr", &hub.admin.to_string()])
        .env("MT_PUBLISH_TOKEN", TOKEN)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(next_json(&mut client).await["data"]["n"], 42);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args([
            "publish",
            "cli",
            "{}",
            "--admin-addr",
            &hub.admin.to_string(),
            "--publish-token",
            "wrong-token-0123456789",
        ])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401") && stderr.contains("--publish-token or MT_PUBLISH_TOKEN"), "{stderr}");
    // Nobody listening: the cause once, not twice.
    let port = free_port().to_string();
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .args(["publish", "cli", "{}", "--admin-addr", &format!("127.0.0.1:{port}")])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.starts_with("mt-stream: cannot reach the hub's admin endpoint at 127.0.0.1:"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}

/// A bad setting stops start-up with a non-zero exit and a message naming it.
#[test]
fn bad_configuration_stops_start_up() {
    for (key, value) in [
        ("MT_MAX_CONNECTIONS", "lots"),
        ("MT_HEARTBEAT_INTERVAL_MS", "0"),
        ("MT_MEMORY_LIMIT", "1.5Gi"),
        ("MT_LOG_FORMAT", "yaml"),
        ("MT_LISTEN", "not-an-address"),
        ("REDIS_URL", "localhost:6379"),
        ("MT_DRAIN_SECONDS", "-1"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
            .arg("serve")
            .env("MT_LISTEN", "127.0.0.1:0")
            .env("MT_ADMIN_LISTEN", "127.0.0.1:0")
            .env(key, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{key}={value} must stop start-up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{key}={value}: message must name the setting: {stderr}");
    }
}

/// JSON logs are one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"));
    command
        .args(["serve"])
        .env("MT_LISTEN", "127.0.0.1:0")
        .env("MT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("MT_LOG_FORMAT", "json")
        .env("MT_PUBLISH_TOKEN", TOKEN)
        .env("MT_AUTH_HMAC_SECRET", "start-line-secret-0123456789abcdef")
        .env("MT_ALLOWED_ORIGINS", "https://monkeytown.dev")
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let record: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    assert_eq!(record["message"], "mt-stream serving");
    assert!(record["public"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The start line is the whole effective configuration, secrets only as "set".
    assert_eq!(record["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(record["http_publish"], true);
    assert_eq!(record["token_check"], "hmac");
    assert!(record["allowed_origins"].as_str().unwrap().contains("https://monkeytown.dev"), "{record}");
    assert!(record["history_channels"].is_string() && record["history_max_events"] == 1000, "{record}");
    assert!(!first.contains(TOKEN) && !first.contains("start-line-secret"), "{first}");
}
