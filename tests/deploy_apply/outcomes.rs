//! Successful applies: server-side apply PATCHes by mt-stream, created / unchanged /
//! configured outcomes, `--dry-run` and `--force-conflicts` in the query, and a missing target
//! Deployment reported as a warning.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use mt_deploy::apply::{Applied, ApplyOptions, Outcome};
use serde_json::json;

use super::{
    built, deployment_exists, discovery_ok, exchange, fresh_script, not_found, outcomes, play, stored, Reply,
    DEPLOYMENT_PATH, HPA_PATH, NAME, NAMESPACE, PDB_PATH,
};

/// A first apply PATCHes both objects as server-side apply by mt-stream, without force or dry run.
#[tokio::test]
async fn first_apply_creates_both_with_server_side_apply() {
    let (result, seen) = play(fresh_script(), ApplyOptions::default()).await;
    let report = result.expect("apply succeeds");
    assert_eq!(
        outcomes(&report),
        [("horizontalpodautoscaler.autoscaling", Outcome::Created), ("poddisruptionbudget.policy", Outcome::Created)]
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.applied[0].to_string(), format!("horizontalpodautoscaler.autoscaling/{NAME} created"));

    let (hpa, pdb) = built();
    let patches: Vec<_> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 2);
    for (patch, (path, body)) in patches.iter().zip([(HPA_PATH, &hpa), (PDB_PATH, &pdb)]) {
        assert_eq!(patch.path, path);
        assert_eq!(patch.content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert_eq!(
            patch.query,
            BTreeMap::from([("fieldManager".to_owned(), "mt-stream".to_owned())]),
            "no force, no dryRun"
        );
        assert_eq!(&patch.json(), body, "the body is the built object");
    }
}

/// Re-applying what the server already holds (same resourceVersion and spec) is "unchanged".
#[tokio::test]
async fn reapply_of_the_same_objects_is_unchanged() {
    let (hpa, pdb) = built();
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, Reply::Json(StatusCode::OK, stored(hpa, "500"))),
        exchange(Method::PATCH, HPA_PATH, Reply::Echo(StatusCode::OK, "500")),
        exchange(Method::GET, PDB_PATH, Reply::Json(StatusCode::OK, stored(pdb, "501"))),
        exchange(Method::PATCH, PDB_PATH, Reply::Echo(StatusCode::OK, "501")),
        deployment_exists(),
    ]);
    let report = play(script, ApplyOptions::default()).await.0.expect("apply succeeds");
    assert_eq!(
        outcomes(&report),
        [
            ("horizontalpodautoscaler.autoscaling", Outcome::Unchanged),
            ("poddisruptionbudget.policy", Outcome::Unchanged)
        ]
    );
}

/// An object whose spec differs from the built one is "configured".
#[tokio::test]
async fn apply_over_a_different_spec_is_configured() {
    let (mut hpa, pdb) = built();
    hpa["spec"]["maxReplicas"] = json!(3);
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, Reply::Json(StatusCode::OK, stored(hpa, "500"))),
        exchange(Method::PATCH, HPA_PATH, Reply::Echo(StatusCode::OK, "777")),
        exchange(Method::GET, PDB_PATH, Reply::Json(StatusCode::OK, stored(pdb, "501"))),
        exchange(Method::PATCH, PDB_PATH, Reply::Echo(StatusCode::OK, "501")),
        deployment_exists(),
    ]);
    let report = play(script, ApplyOptions::default()).await.0.expect("apply succeeds");
    assert_eq!(
        outcomes(&report),
        [
            ("horizontalpodautoscaler.autoscaling", Outcome::Configured),
            ("poddisruptionbudget.policy", Outcome::Unchanged)
        ]
    );
}

/// --dry-run sends dryRun=All; a changed spec still reads "configured" though the server keeps
/// the resourceVersion, and the output says it was a dry run.
#[tokio::test]
async fn dry_run_sends_dry_run_all() {
    let (mut hpa, _) = built();
    hpa["spec"]["minReplicas"] = json!(1);
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, Reply::Json(StatusCode::OK, stored(hpa, "500"))),
        exchange(Method::PATCH, HPA_PATH, Reply::Echo(StatusCode::OK, "500")),
        exchange(Method::GET, PDB_PATH, not_found("policy", "poddisruptionbudgets", NAME)),
        exchange(Method::PATCH, PDB_PATH, Reply::Echo(StatusCode::CREATED, "")),
        deployment_exists(),
    ]);
    let (result, seen) = play(script, ApplyOptions { dry_run: true, force_conflicts: false }).await;
    let report = result.expect("dry run succeeds");
    assert_eq!(
        report.applied,
        [
            Applied {
                kind: "horizontalpodautoscaler.autoscaling",
                name: NAME.into(),
                outcome: Outcome::Configured,
                dry_run: true
            },
            Applied { kind: "poddisruptionbudget.policy", name: NAME.into(), outcome: Outcome::Created, dry_run: true },
        ]
    );
    assert_eq!(report.applied[1].to_string(), format!("poddisruptionbudget.policy/{NAME} created (server dry run)"));
    for patch in seen.iter().filter(|s| s.method == Method::PATCH) {
        assert_eq!(patch.query.get("dryRun").map(String::as_str), Some("All"));
        assert_eq!(patch.query.get("force"), None);
        assert_eq!(patch.query.get("fieldManager").map(String::as_str), Some("mt-stream"));
    }
}

/// --force-conflicts sends force=true on both PATCHes (and only then: see the first test).
#[tokio::test]
async fn force_conflicts_sends_force() {
    let (result, seen) = play(fresh_script(), ApplyOptions { dry_run: false, force_conflicts: true }).await;
    result.expect("apply succeeds");
    let patches: Vec<_> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 2);
    for patch in patches {
        assert_eq!(patch.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(patch.query.get("dryRun"), None);
    }
}

/// A missing target Deployment is a warning: both objects are still applied.
#[tokio::test]
async fn missing_deployment_is_a_warning() {
    let mut script = fresh_script();
    script.pop();
    script.push(exchange(Method::GET, DEPLOYMENT_PATH, not_found("apps", "deployments", NAME)));
    let report = play(script, ApplyOptions::default()).await.0.expect("apply succeeds");
    assert_eq!(report.applied.len(), 2);
    assert_eq!(
        report.warnings,
        [format!(
            "Deployment {NAME} not found in namespace {NAMESPACE}: the HPA scales nothing until the chart installs it"
        )]
    );
}
