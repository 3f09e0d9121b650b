//! The real binary, for the two error classes that happen before any API request: no
//! kubeconfig (exit 3) and an API server on a closed local port (exit 4).

fn binary(args: &[&str], home: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .arg("deploy")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("MT_MAX_CONNECTIONS")
        .env_remove("MT_MEMORY_LIMIT")
        .env("HOME", home)
        .output()
        .expect("the mt-stream binary runs")
}

fn temp_home(test: &str) -> std::path::PathBuf {
    let home = std::env::temp_dir().join(format!("mt-stream-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("temp home");
    home
}

/// The real binary with no kubeconfig and no service account exits 3 with a one-line reason.
#[test]
fn binary_without_kubeconfig_exits_3() {
    let home = temp_home("no-kubeconfig");
    let output = binary(&["--env", "dev"], &home);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("mt-stream deploy: error: no kubeconfig: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let missing = home.join("nope.yaml");
    let output = binary(&["--env", "dev", "--kubeconfig", missing.to_str().expect("UTF-8 path")], &home);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("nope.yaml does not exist"), "{stderr}");
    let _ = std::fs::remove_dir_all(&home);
}

/// The real binary pointed at a closed port on 127.0.0.1 exits 4 ("unreachable").
#[test]
fn binary_with_unreachable_server_exits_4() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local addr").port()
    }; // closed again here: nothing listens on it.
    let home = temp_home("unreachable");
    let kubeconfig = home.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: local\n\
             clusters:\n- name: local\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: nobody\n  user:\n    token: not-a-real-token\n\
             contexts:\n- name: local\n  context:\n    cluster: local\n    user: nobody\n"
        ),
    )
    .expect("write kubeconfig");
    let output = binary(&["--env", "dev", "--kubeconfig", kubeconfig.to_str().expect("UTF-8 path")], &home);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.starts_with("mt-stream deploy: error: API server unreachable during get /apis/autoscaling/v2: "),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&home);
}
