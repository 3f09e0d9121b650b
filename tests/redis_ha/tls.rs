//! TLS: a real redis-server speaking TLS only, with a certificate from a private CA made by the
//! `openssl` command; the hub trusts it through `MT_REDIS_CA_FILE`, and refuses it without.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::cluster::wait_until;
use crate::common::{free_port, next_json, wait_for, HubProcess, DEADLINE};
use crate::ONE_AT_A_TIME;

const PASSWORD: &str = "tls-test-password-0123456789";

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed (the README's test command installs it)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a server certificate it signed for IP 127.0.0.1.
fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=mt-stream test CA"],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

/// redis-server with TLS only (no plain port), a password, and the test CA's certificate.
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl TlsRedis {
    fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("mt-stream-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        certificates(&dir);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt"])
            .args(["--tls-auth-clients", "no", "--requirepass", PASSWORD])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        wait_until("redis-server to listen with TLS", DEADLINE, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, dir, child }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.crt").display().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// With the private CA and the password from REDIS_PASSWORD: ready, and events flow through
/// the TLS connection; the start line names TLS and where the password came from, not it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_delivers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = TlsRedis::start();
    let hub = HubProcess::start(&[
        ("REDIS_URL", &redis.url()),
        ("MT_REDIS_CA_FILE", &redis.ca()),
        ("REDIS_PASSWORD", PASSWORD),
        ("MT_HISTORY_CHANNELS", "*"),
    ]);
    hub.wait_ready(200).await;
    let mut client = hub.subscriber(&["secure"]).await;
    let (status, body) = hub.publish("secure", "{\"over\":\"tls\"}").await;
    assert_eq!(status, 202, "{body}");
    let event = next_json(&mut client).await;
    assert_eq!(event["data"]["over"], "tls", "{event}");
    let logs = hub.logs.lock().unwrap().join("\n");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

/// Without the CA the server's certificate is not trusted: the hub stays unready and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_without_the_ca_is_refused_and_says_why() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = TlsRedis::start();
    let hub = HubProcess::start(&[("REDIS_URL", &redis.url()), ("REDIS_PASSWORD", PASSWORD)]);
    let line = wait_for("a log line naming the certificate problem", || async {
        hub.logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| {
                l.contains("redis connection lost")
                    && l.contains("certificate was refused (UnknownIssuer)")
                    && l.contains("MT_REDIS_CA_FILE")
            })
            .cloned()
    })
    .await;
    assert!(!line.contains(PASSWORD), "{line}");
    let (status, body) = hub.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
}

/// Bad Redis settings stop start-up with a message naming the setting, never the password.
#[test]
fn bad_redis_settings_stop_start_up() {
    let secret = "hunter2-not-for-logs";
    for (env, setting) in [
        (vec![("REDIS_URL", format!("http://u:{secret}@x:1"))], "REDIS_URL"),
        (vec![("REDIS_URL", format!("redis-sentinel://u:{secret}@x:26379"))], "REDIS_URL"),
        (
            vec![("REDIS_URL", format!("redis://u:{secret}@x:1")), ("MT_REDIS_CA_FILE", "/etc/hostname".into())],
            "MT_REDIS_CA_FILE",
        ),
        (
            vec![("REDIS_URL", format!("rediss://u:{secret}@x:1")), ("MT_REDIS_CA_FILE", "/nonexistent.pem".into())],
            "MT_REDIS_CA_FILE",
        ),
        (vec![("MT_REDIS_CA_FILE", "/nonexistent.pem".into())], "MT_REDIS_CA_FILE"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mt-stream"));
        command.arg("serve").env_clear().env("MT_LISTEN", "127.0.0.1:0").env("MT_ADMIN_LISTEN", "127.0.0.1:0");
        for (key, value) in &env {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?} must stop start-up");
        assert!(stderr.contains(setting), "{env:?}: must name {setting}: {stderr}");
        assert!(!stderr.contains(secret), "{env:?}: echoed the password: {stderr}");
    }
}
