//! `mt-stream deploy` against a **real cluster**. Ignored by default (no cluster can be reached
//! from a test machine without one); `./scripts/test` runs it when `KUBECONFIG` is set, and by
//! hand: `KUBECONFIG=… cargo test --test deploy_cluster -- --ignored`. Run without a
//! `KUBECONFIG`, it fails and says so: it never passes without touching a cluster.
//!
//! It applies the dev profile into `$MT_DEPLOY_TEST_NAMESPACE` (default `monkeytown-dev`,
//! which must exist) with the real binary: a server-side dry run, a real apply, and a second
//! real apply that must report both objects unchanged. The objects are left in place (they are
//! what `deploy --env dev` would create anyway). Once the cluster is selected, any failure
//! fails the test: a missing namespace or RBAC refusal is reported, never skipped.

use std::process::Command;

fn deploy(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mt-stream"))
        .arg("deploy")
        .args(args)
        .env_remove("MT_MAX_CONNECTIONS")
        .env_remove("MT_MEMORY_LIMIT")
        .output()
        .expect("the mt-stream binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// With KUBECONFIG set, dry run, apply and re-apply the dev objects; the re-apply is unchanged.
#[test]
#[ignore = "needs a real cluster: set KUBECONFIG and run with --ignored (./scripts/test does when KUBECONFIG is set)"]
fn applies_to_the_cluster_in_kubeconfig() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()),
        "KUBECONFIG is not set: this test applies to a real cluster and has none to apply to"
    );
    let namespace = std::env::var("MT_DEPLOY_TEST_NAMESPACE").unwrap_or_else(|_| "monkeytown-dev".into());
    let base = ["--env", "dev", "--namespace", namespace.as_str()];
    let name = "monkeytown-dev-event-stream";

    let (code, stdout, stderr) = deploy(&[&base[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "dry run failed:\n{stderr}");
    assert!(stdout.lines().all(|l| l.ends_with(" (server dry run)")), "{stdout}");

    let (code, stdout, stderr) = deploy(&base);
    assert_eq!(code, 0, "apply failed:\n{stderr}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with(&format!("horizontalpodautoscaler.autoscaling/{name} ")), "{stdout}");
    assert!(lines[1].starts_with(&format!("poddisruptionbudget.policy/{name} ")), "{stdout}");

    let (code, stdout, stderr) = deploy(&base);
    assert_eq!(code, 0, "re-apply failed:\n{stderr}");
    assert_eq!(
        stdout,
        format!("horizontalpodautoscaler.autoscaling/{name} unchanged\npoddisruptionbudget.policy/{name} unchanged\n")
    );
}
