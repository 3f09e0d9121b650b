//! `deploy`'s apply path against a **mock API server, not a real cluster**: kube's own `Client`
//! runs over `tower_test::mock`, and each test plays a script of API server responses
//! (discovery lists, `Status` errors, objects with a resourceVersion) written by hand in the
//! shapes the Kubernetes API server returns. The mock asserts every request the client makes
//! (method, path, query, content type, body), so these tests prove what `deploy` sends and how
//! it reads the answers, not that a real API server agrees: `tests/deploy_cluster.rs` does that
//! when a cluster is at hand.
//!
//! The last tests run the real binary against no kubeconfig and a closed local port, for the
//! two error classes that happen before any API request.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use mt_budget::Budget;
use mt_deploy::apply::{self, Applied, ApplyError, ApplyOptions, Outcome, Report};
use mt_deploy::{DeployError, Environment, Objects, Settings};
use serde_json::{json, Value};
use tower_test::mock;

const NAMESPACE: &str = "monkeytown-staging";
const NAME: &str = "monkeytown-staging-event-stream";
const HPA_PATH: &str =
    "/apis/autoscaling/v2/namespaces/monkeytown-staging/horizontalpodautoscalers/monkeytown-staging-event-stream";
const PDB_PATH: &str =
    "/apis/policy/v1/namespaces/monkeytown-staging/poddisruptionbudgets/monkeytown-staging-event-stream";
const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/monkeytown-staging/deployments/monkeytown-staging-event-stream";

/// What the mock API server answers to one expected request.
enum Reply {
    /// A JSON body with this status.
    Json(StatusCode, Value),
    /// A plain-text body (what the API server sends for an unknown path).
    Text(StatusCode, &'static str),
    /// The applied body echoed back as the stored object, with this resourceVersion.
    Echo(StatusCode, &'static str),
    /// A transport error: the connection failed.
    ConnectionRefused,
}

/// One expected request and its reply.
struct Exchange {
    method: Method,
    path: &'static str,
    reply: Reply,
}

fn exchange(method: Method, path: &'static str, reply: Reply) -> Exchange {
    Exchange { method, path, reply }
}

/// A request the mock saw.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// Runs `script` against `deploy`'s apply with `options`; returns the result and the requests.
async fn play(script: Vec<Exchange>, options: ApplyOptions) -> (Result<Report, ApplyError>, Vec<Seen>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for step in script {
            let Some((request, respond)) = handle.next_request().await else {
                return (seen, Some(format!("no request came; expected {} {}", step.method, step.path)));
            };
            let (parts, body) = request.into_parts();
            let body = body.collect().await.expect("request body").to_bytes().to_vec();
            let query = parts
                .uri
                .query()
                .map(|q| {
                    q.split('&')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (k.to_owned(), v.to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let request = Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query,
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().expect("ASCII header").to_owned()),
                body,
            };
            if request.method != step.method || request.path != step.path {
                let error = format!("expected {} {}, got {} {}", step.method, step.path, request.method, request.path);
                seen.push(request);
                return (seen, Some(error));
            }
            let response = match step.reply {
                Reply::Json(status, value) => json_response(status, &value),
                Reply::Text(status, text) => Response::builder()
                    .status(status)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(Body::from(text.as_bytes().to_vec()))
                    .expect("response"),
                Reply::Echo(status, resource_version) => {
                    json_response(status, &stored(request.json(), resource_version))
                }
                Reply::ConnectionRefused => {
                    respond
                        .send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
                    seen.push(request);
                    continue;
                }
            };
            respond.send_response(response);
            seen.push(request);
        }
        (seen, None)
    });

    let client = Client::new(service, "default");
    let objects = Objects::build(&Settings {
        environment: Environment::Staging,
        release: "monkeytown-staging".into(),
        budget: Budget::default(),
        connections_metric: false,
    });
    let result = tokio::time::timeout(Duration::from_secs(10), apply::apply(&client, NAMESPACE, &objects, options))
        .await
        .expect("apply finishes");
    drop(client);
    let (seen, error) = server.await.expect("mock server task");
    if let Some(error) = error {
        panic!("mock API server: {error}\nresult: {result:?}");
    }
    (result, seen)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("JSON")))
        .expect("response")
}

/// The object as the API server stores it: the applied body plus server-set metadata.
fn stored(mut object: Value, resource_version: &str) -> Value {
    let api_version = object["apiVersion"].clone();
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    metadata.insert("namespace".into(), json!(NAMESPACE));
    metadata.insert("resourceVersion".into(), json!(resource_version));
    metadata.insert("uid".into(), json!("0b9a4c1e-5d0e-4c47-9f55-2f3c1c7f1a10"));
    metadata.insert("generation".into(), json!(1));
    metadata.insert(
        "managedFields".into(),
        json!([{ "manager": "mt-stream", "operation": "Apply", "apiVersion": api_version, "fieldsType": "FieldsV1", "fieldsV1": {} }]),
    );
    object
}

/// The built objects as JSON (what `deploy` applies), for expected bodies and stored objects.
fn built() -> (Value, Value) {
    let objects = Objects::build(&Settings {
        environment: Environment::Staging,
        release: "monkeytown-staging".into(),
        budget: Budget::default(),
        connections_metric: false,
    });
    (
        serde_json::to_value(&objects.horizontal_pod_autoscaler).expect("JSON"),
        serde_json::to_value(&objects.pod_disruption_budget).expect("JSON"),
    )
}

fn discovery(group_version: &str, plural: &str, kind: &str) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            { "name": plural, "singularName": "", "namespaced": true, "kind": kind,
              "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"] },
            { "name": format!("{plural}/status"), "singularName": "", "namespaced": true, "kind": kind,
              "verbs": ["get", "patch", "update"] }
        ]
    })
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "details": details, "code": code
    })
}

fn not_found(group: &str, kind: &str, name: &str) -> Reply {
    let message = format!("{kind}.{group} \"{name}\" not found");
    Reply::Json(
        StatusCode::NOT_FOUND,
        status(404, "NotFound", &message, json!({ "name": name, "group": group, "kind": kind })),
    )
}

fn discovery_ok() -> Vec<Exchange> {
    vec![
        exchange(
            Method::GET,
            "/apis/autoscaling/v2",
            Reply::Json(
                StatusCode::OK,
                discovery("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
            ),
        ),
        exchange(
            Method::GET,
            "/apis/policy/v1",
            Reply::Json(StatusCode::OK, discovery("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget")),
        ),
    ]
}

fn deployment_exists() -> Exchange {
    exchange(
        Method::GET,
        DEPLOYMENT_PATH,
        Reply::Json(
            StatusCode::OK,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": NAME, "namespace": NAMESPACE, "resourceVersion": "42" },
                "spec": { "selector": { "matchLabels": { "app.kubernetes.io/name": "monkeytown" } },
                          "template": { "spec": { "containers": [] } } }
            }),
        ),
    )
}

/// A script where both objects are new and every request succeeds.
fn fresh_script() -> Vec<Exchange> {
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, not_found("autoscaling", "horizontalpodautoscalers", NAME)),
        exchange(Method::PATCH, HPA_PATH, Reply::Echo(StatusCode::CREATED, "1001")),
        exchange(Method::GET, PDB_PATH, not_found("policy", "poddisruptionbudgets", NAME)),
        exchange(Method::PATCH, PDB_PATH, Reply::Echo(StatusCode::CREATED, "1002")),
        deployment_exists(),
    ]);
    script
}

fn exit_code(error: ApplyError) -> (u8, String) {
    let error = DeployError::from(error);
    (error.exit_code(), error.to_string())
}

fn outcomes(report: &Report) -> Vec<(&str, Outcome)> {
    report.applied.iter().map(|a| (a.kind, a.outcome)).collect()
}

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

/// An SSA conflict names the field and its current manager and exits 8.
#[tokio::test]
async fn conflict_names_field_and_manager() {
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, not_found("autoscaling", "horizontalpodautoscalers", NAME)),
        exchange(
            Method::PATCH,
            HPA_PATH,
            Reply::Json(
                StatusCode::CONFLICT,
                status(
                    409,
                    "Conflict",
                    "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using autoscaling/v2: .spec.maxReplicas",
                    json!({ "causes": [{
                        "reason": "FieldManagerConflict",
                        "message": "conflict with \"kubectl-edit\" using autoscaling/v2",
                        "field": ".spec.maxReplicas"
                    }] }),
                ),
            ),
        ),
    ]);
    let error = play(script, ApplyOptions::default()).await.0.expect_err("conflict");
    let (code, message) = exit_code(error);
    assert_eq!(code, 8);
    assert_eq!(
        message,
        format!(
            "server-side apply conflict on patch horizontalpodautoscalers.autoscaling/{NAME} in namespace {NAMESPACE}: \
             field .spec.maxReplicas is managed by \"kubectl-edit\"; rerun with --force-conflicts to take ownership"
        )
    );
}

/// RBAC refusing the PATCH names the verb and resource and exits 5.
#[tokio::test]
async fn forbidden_names_verb_and_resource() {
    let server_message = "horizontalpodautoscalers.autoscaling \"monkeytown-staging-event-stream\" is forbidden: \
        User \"dev\" cannot patch resource \"horizontalpodautoscalers\" in API group \"autoscaling\" in the namespace \"monkeytown-staging\"";
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, not_found("autoscaling", "horizontalpodautoscalers", NAME)),
        exchange(
            Method::PATCH,
            HPA_PATH,
            Reply::Json(
                StatusCode::FORBIDDEN,
                status(
                    403,
                    "Forbidden",
                    server_message,
                    json!({ "name": NAME, "group": "autoscaling", "kind": "horizontalpodautoscalers" }),
                ),
            ),
        ),
    ]);
    let error = play(script, ApplyOptions::default()).await.0.expect_err("forbidden");
    let (code, message) = exit_code(error);
    assert_eq!(code, 5);
    assert_eq!(
        message,
        format!("RBAC refused: cannot patch horizontalpodautoscalers.autoscaling/{NAME} in namespace {NAMESPACE} (403: {server_message})")
    );
}

/// Rejected credentials (401) at the first request exit 5 and name the request.
#[tokio::test]
async fn unauthorized_exits_5() {
    let script = vec![exchange(
        Method::GET,
        "/apis/autoscaling/v2",
        Reply::Json(StatusCode::UNAUTHORIZED, status(401, "Unauthorized", "Unauthorized", json!(null))),
    )];
    let (code, message) = exit_code(play(script, ApplyOptions::default()).await.0.expect_err("401"));
    assert_eq!(code, 5);
    assert_eq!(message, "unauthorized: the API server rejected the credentials (401) during get /apis/autoscaling/v2");
}

/// A PATCH into a namespace that does not exist exits 6 naming the namespace.
#[tokio::test]
async fn missing_namespace_exits_6() {
    let mut script = discovery_ok();
    script.extend([
        exchange(Method::GET, HPA_PATH, not_found("autoscaling", "horizontalpodautoscalers", NAME)),
        exchange(Method::PATCH, HPA_PATH, {
            let message = format!("namespaces \"{NAMESPACE}\" not found");
            Reply::Json(
                StatusCode::NOT_FOUND,
                status(404, "NotFound", &message, json!({ "name": NAMESPACE, "kind": "namespaces" })),
            )
        }),
    ]);
    let (code, message) = exit_code(play(script, ApplyOptions::default()).await.0.expect_err("404"));
    assert_eq!(code, 6);
    assert_eq!(message, format!("namespace {NAMESPACE} not found: create it (or pass --namespace) and retry"));
}

/// A cluster that does not serve autoscaling/v2 (discovery 404) exits 7 before any write.
#[tokio::test]
async fn unserved_api_version_exits_7() {
    let script =
        vec![exchange(Method::GET, "/apis/autoscaling/v2", Reply::Text(StatusCode::NOT_FOUND, "404 page not found\n"))];
    let (result, seen) = play(script, ApplyOptions::default()).await;
    let (code, message) = exit_code(result.expect_err("not served"));
    assert_eq!(code, 7);
    assert_eq!(
        message,
        "API version autoscaling/v2 is not served by this cluster (HorizontalPodAutoscaler needs Kubernetes 1.27 or newer)"
    );
    assert_eq!(seen.len(), 1);
}

/// policy/v1 served without poddisruptionbudgets also counts as not served.
#[tokio::test]
async fn group_version_without_the_resource_exits_7() {
    let mut script = discovery_ok();
    script[1] = exchange(
        Method::GET,
        "/apis/policy/v1",
        Reply::Json(
            StatusCode::OK,
            json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1", "resources": [] }),
        ),
    );
    let (code, message) = exit_code(play(script, ApplyOptions::default()).await.0.expect_err("not served"));
    assert_eq!(code, 7);
    assert!(message.starts_with("API version policy/v1 is not served"), "{message}");
}

/// A transport failure exits 4 and says which request could not reach the server.
#[tokio::test]
async fn unreachable_exits_4() {
    let script = vec![exchange(Method::GET, "/apis/autoscaling/v2", Reply::ConnectionRefused)];
    let (code, message) = exit_code(play(script, ApplyOptions::default()).await.0.expect_err("unreachable"));
    assert_eq!(code, 4);
    assert_eq!(message, "API server unreachable during get /apis/autoscaling/v2: connection refused");
}

/// An unexpected API error (500) exits 1 and keeps the server's message.
#[tokio::test]
async fn other_api_errors_exit_1() {
    let mut script = discovery_ok();
    script.push(exchange(
        Method::GET,
        HPA_PATH,
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "etcdserver: request timed out", json!(null)),
        ),
    ));
    let (code, message) = exit_code(play(script, ApplyOptions::default()).await.0.expect_err("500"));
    assert_eq!(code, 1);
    assert_eq!(
        message,
        format!("get horizontalpodautoscalers.autoscaling/{NAME} in namespace {NAMESPACE} failed: etcdserver: request timed out")
    );
}

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
