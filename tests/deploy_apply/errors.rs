//! API errors, each with its exit code and a message naming what failed: an SSA conflict (8),
//! RBAC refusal and rejected credentials (5), a missing namespace (6), an API version not served
//! (7), an unreachable server (4) and any other API error (1).

use http::{Method, StatusCode};
use mt_deploy::apply::ApplyOptions;
use serde_json::json;

use super::{discovery_ok, exchange, exit_code, not_found, play, status, Reply, HPA_PATH, NAME, NAMESPACE};

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
