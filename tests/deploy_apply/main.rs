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
//!
//! The tests are grouped in modules: `outcomes` (what a successful apply sends and reports),
//! `errors` (each API error class and its exit code) and `binary` (the real binary). The mock
//! API server and the scripts' building blocks are here.

mod binary;
mod errors;
mod outcomes;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use mt_budget::Budget;
use mt_deploy::apply::{self, ApplyError, ApplyOptions, Outcome, Report};
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
