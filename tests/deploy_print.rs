//! `mt-stream deploy --print` through the real binary: the YAML parses back into the two typed
//! objects, equals what the builders make, follows the budget flags and environment variables,
//! and passes `kubernetes-validate --strict` for Kubernetes 1.27 and the newest schema the tool
//! ships. No cluster is involved.
//!
//! The validator is looked up at `$KUBERNETES_VALIDATE`, else `<repo>/.tools/venv/bin/kubernetes-validate`
//! (installed by `scripts/install-test-tools.sh`). When it is missing the validation test fails
//! under `CI=true` and otherwise prints `SKIPPED: ...` on stderr (not captured) and returns.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use mt_budget::Budget;
use mt_deploy::{Environment, Objects, Settings};
use serde::Deserialize;

/// Oldest Kubernetes version we support (docs/scaling-profiles.md).
const OLDEST_KUBERNETES: &str = "1.27.0";

fn deploy(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mt-stream"));
    command.arg("deploy").args(args);
    // The budget variables of the developer's shell must not leak into the expectations.
    command.env_remove("MT_MAX_CONNECTIONS").env_remove("MT_MEMORY_LIMIT");
    command.envs(envs.iter().copied());
    command.output().expect("the mt-stream binary runs")
}

fn print(env: &str, extra: &[&str], envs: &[(&str, &str)]) -> String {
    let mut args = vec!["--env", env, "--print"];
    args.extend_from_slice(extra);
    let output = deploy(&args, envs);
    assert!(output.status.success(), "deploy --print failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 YAML")
}

/// Parses the printed stream as exactly one HPA followed by one PDB.
fn parse(yaml: &str) -> (HorizontalPodAutoscaler, PodDisruptionBudget) {
    let mut documents = serde_norway::Deserializer::from_str(yaml);
    let hpa = HorizontalPodAutoscaler::deserialize(documents.next().expect("a first document"))
        .expect("the first document is an autoscaling/v2 HorizontalPodAutoscaler");
    let pdb = PodDisruptionBudget::deserialize(documents.next().expect("a second document"))
        .expect("the second document is a policy/v1 PodDisruptionBudget");
    assert!(documents.next().is_none(), "exactly two documents:\n{yaml}");
    (hpa, pdb)
}

fn memory_target(hpa: &HorizontalPodAutoscaler) -> String {
    let metrics = hpa.spec.metrics.as_ref().expect("metrics");
    let memory = metrics[1].resource.as_ref().expect("a resource metric");
    assert_eq!(memory.name, "memory");
    memory.target.average_value.as_ref().expect("averageValue").0.clone()
}

/// For each env the printed YAML parses into the typed objects the builders make.
#[test]
fn print_parses_into_the_built_objects() {
    for env in Environment::ALL {
        let yaml = print(env.as_str(), &[], &[]);
        assert!(yaml.starts_with("---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n"));
        let (hpa, pdb) = parse(&yaml);
        let expected = Objects::build(&Settings {
            environment: env,
            release: format!("monkeytown-{env}"),
            budget: Budget::default(),
            connections_metric: false,
        });
        assert_eq!(hpa, expected.horizontal_pod_autoscaler, "{env}");
        assert_eq!(pdb, expected.pod_disruption_budget, "{env}");
        let name = format!("monkeytown-{env}-event-stream");
        assert_eq!(hpa.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(pdb.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(hpa.spec.scale_target_ref.name, name);
        assert_eq!(memory_target(&hpa), "768Mi");
    }
}

/// Two runs print the same bytes (the chart comparison and reviews rely on it).
#[test]
fn print_is_stable() {
    assert_eq!(print("prod", &[], &[]), print("prod", &[], &[]));
}

/// MT_MEMORY_LIMIT / MT_MAX_CONNECTIONS change the targets, and the flags win over them.
#[test]
fn budget_environment_and_flags_change_the_output() {
    let from_env =
        print("dev", &["--connections-metric"], &[("MT_MEMORY_LIMIT", "2Gi"), ("MT_MAX_CONNECTIONS", "2000")]);
    let (hpa, _) = parse(&from_env);
    assert_eq!(memory_target(&hpa), "1536Mi");
    let pods = hpa.spec.metrics.as_ref().expect("metrics")[2].pods.as_ref().expect("a Pods metric");
    assert_eq!(pods.metric.name, "mt_stream_connections");
    assert_eq!(pods.target.average_value.as_ref().expect("averageValue").0, "1400");

    let flag_wins = print("dev", &["--memory-limit", "4Gi"], &[("MT_MEMORY_LIMIT", "2Gi")]);
    assert_eq!(memory_target(&parse(&flag_wins).0), "3Gi");
}

/// --release changes the instance label and the PDB selector, as the chart's helpers do.
#[test]
fn release_flag_changes_labels() {
    let (hpa, pdb) = parse(&print("staging", &["--release", "mt-canary"], &[]));
    let labels = hpa.metadata.labels.expect("labels");
    assert_eq!(labels["app.kubernetes.io/instance"], "mt-canary");
    let selector = pdb.spec.expect("spec").selector.expect("selector").match_labels.expect("labels");
    assert_eq!(selector["app.kubernetes.io/instance"], "mt-canary");
}

/// A budget that cannot hold and a bad release name exit 2 with a one-line reason.
#[test]
fn usage_errors_exit_2() {
    let output = deploy(&["--env", "dev", "--print", "--max-connections", "100000"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("mt-stream deploy: error: invalid budget: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(output.stdout.is_empty());

    let output = deploy(&["--env", "dev", "--print", "--release", "Not_A_Label"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let output = deploy(&["--env", "qa", "--print"], &[]);
    assert_eq!(output.status.code(), Some(2), "clap refuses an unknown env");
}

fn validator() -> Option<PathBuf> {
    let path = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/kubernetes-validate"));
    path.is_file().then_some(path)
}

/// The newest Kubernetes version the installed validator ships (its `--help` default).
fn newest_schema(validator: &PathBuf) -> String {
    let help = Command::new(validator).arg("--help").output().expect("kubernetes-validate --help runs");
    let text = String::from_utf8_lossy(&help.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    let version = text
        .split("Defaults to ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|v| v.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| panic!("cannot read the default version from kubernetes-validate --help:\n{text}"));
    // The default is the newest schema it ships; it must be at least the oldest we support.
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).expect("a x.y.z version");
    assert!(minor(&version) >= minor(OLDEST_KUBERNETES), "validator too old: {version}");
    version
}

/// The printed YAML of each env (with and without the connections metric) passes
/// `kubernetes-validate --strict` for 1.27 and the newest shipped schema.
#[test]
fn print_validates_against_kubernetes_schemas() {
    let Some(validator) = validator() else {
        let reason = "kubernetes-validate not found at $KUBERNETES_VALIDATE or .tools/venv/bin (run scripts/install-test-tools.sh)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}; CI=true requires it");
        }
        // Written past the test harness's capture so the skip is always visible.
        let _ = writeln!(std::io::stderr(), "SKIPPED print_validates_against_kubernetes_schemas: {reason}");
        return;
    };
    let newest = newest_schema(&validator);
    let dir = std::env::temp_dir().join(format!("mt-stream-deploy-print-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for env in Environment::ALL {
        for extra in [&[][..], &["--connections-metric"]] {
            let file = dir.join(format!("{env}{}.yaml", extra.len()));
            std::fs::write(&file, print(env.as_str(), extra, &[])).expect("write YAML");
            for version in [OLDEST_KUBERNETES, newest.as_str()] {
                let output = Command::new(&validator)
                    .args(["--strict", "--kubernetes-version", version])
                    .arg(&file)
                    .output()
                    .expect("kubernetes-validate runs");
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(
                    output.status.success(),
                    "{env} {extra:?} against {version}:\n{stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                // Both objects were checked, not skipped as unknown kinds.
                assert_eq!(stdout.matches(" passed for resource ").count(), 2, "{stdout}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
