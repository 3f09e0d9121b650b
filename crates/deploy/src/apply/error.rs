//! What can go wrong talking to the cluster: the [`Operation`] that failed (named like an RBAC
//! rule) and the [`ApplyError`] class an operator acts on, each with its exit code.

use std::fmt;
use std::path::PathBuf;

use kube::config::KubeconfigError;
use kube::Resource;

/// A request `deploy` made, named the way RBAC names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// RBAC verb: `get` or `patch`.
    pub verb: &'static str,
    /// `resource.group` (`horizontalpodautoscalers.autoscaling`) or a discovery path.
    pub resource: String,
    /// Object name, when the request is about one object.
    pub name: Option<String>,
    /// Namespace, when the request is namespaced.
    pub namespace: Option<String>,
}

impl Operation {
    pub(super) fn on<K: Resource<DynamicType = ()>>(verb: &'static str, name: &str, namespace: &str) -> Operation {
        let group = K::group(&());
        let plural = K::plural(&());
        let resource = if group.is_empty() { plural.into_owned() } else { format!("{plural}.{group}") };
        Operation { verb, resource, name: Some(name.to_owned()), namespace: Some(namespace.to_owned()) }
    }

    pub(super) fn discovery(api_version: &str) -> Operation {
        Operation { verb: "get", resource: format!("/apis/{api_version}"), name: None, namespace: None }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, "/{name}")?;
        }
        if let Some(namespace) = &self.namespace {
            write!(f, " in namespace {namespace}")?;
        }
        Ok(())
    }
}

/// A field another manager owns, from a server-side apply conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The field path as the API server gives it, e.g. `.spec.maxReplicas`.
    pub field: String,
    /// The manager that owns it, e.g. `kubectl-client-side-apply`.
    pub manager: String,
}

/// Why connecting or applying failed. Each variant is one error class with its own exit code
/// (see [`super::DeployError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("no kubeconfig: set KUBECONFIG, pass --kubeconfig or run in a pod with a service account ({reason})")]
    NoKubeconfig { reason: String },

    #[error("cannot use kubeconfig {}: {source}", path.as_deref().map_or_else(|| "(default)".into(), |p| p.display().to_string()))]
    Kubeconfig {
        path: Option<PathBuf>,
        #[source]
        source: KubeconfigError,
    },

    #[error("cannot build a kube client: {source}")]
    Client {
        #[source]
        source: kube::Error,
    },

    #[error("API server unreachable during {operation}: {reason}")]
    Unreachable {
        operation: Operation,
        reason: String,
        #[source]
        source: kube::Error,
    },

    #[error("unauthorized: the API server rejected the credentials (401) during {operation}")]
    Unauthorized {
        operation: Operation,
        #[source]
        source: kube::Error,
    },

    #[error("RBAC refused: cannot {operation} (403: {message})")]
    Forbidden {
        operation: Operation,
        message: String,
        #[source]
        source: kube::Error,
    },

    #[error("namespace {namespace} not found: create it (or pass --namespace) and retry")]
    NamespaceMissing {
        namespace: String,
        #[source]
        source: kube::Error,
    },

    #[error("API version {api_version} is not served by this cluster ({kind} needs Kubernetes 1.27 or newer)")]
    NotServed { api_version: &'static str, kind: &'static str },

    #[error(
        "server-side apply conflict on {operation}: {}; rerun with --force-conflicts to take ownership",
        conflicts.iter().map(|c| format!("field {} is managed by {:?}", c.field, c.manager)).collect::<Vec<_>>().join(", ")
    )]
    Conflict {
        operation: Operation,
        conflicts: Vec<Conflict>,
        #[source]
        source: kube::Error,
    },

    #[error("{operation} failed: {message}")]
    Api {
        operation: Operation,
        message: String,
        #[source]
        source: kube::Error,
    },
}

/// Maps a kube error from `operation` to the error class an operator acts on.
pub(super) fn classify(operation: Operation, error: kube::Error) -> ApplyError {
    match error {
        kube::Error::Api(ref status) => {
            let status = status.clone();
            match status.code {
                401 => ApplyError::Unauthorized { operation, source: error },
                403 => ApplyError::Forbidden { operation, message: status.message, source: error },
                404 if status.details.as_ref().is_some_and(|d| d.kind == "namespaces") => {
                    let namespace = operation.namespace.clone().unwrap_or_default();
                    ApplyError::NamespaceMissing { namespace, source: error }
                }
                409 if status.reason == "Conflict" => {
                    let conflicts = status
                        .details
                        .iter()
                        .flat_map(|d| &d.causes)
                        .filter(|c| c.reason == "FieldManagerConflict")
                        .map(|c| Conflict { field: c.field.clone(), manager: quoted(&c.message) })
                        .collect::<Vec<_>>();
                    if conflicts.is_empty() {
                        ApplyError::Api { operation, message: status.message, source: error }
                    } else {
                        ApplyError::Conflict { operation, conflicts, source: error }
                    }
                }
                _ => ApplyError::Api { operation, message: status.message, source: error },
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            ApplyError::Unreachable { operation, reason: root_cause(&error), source: error }
        }
        other => ApplyError::Api { operation, message: other.to_string(), source: other },
    }
}

/// The manager name in a conflict cause: `conflict with "kubectl-edit" using autoscaling/v2`.
fn quoted(message: &str) -> String {
    message.split('"').nth(1).map_or_else(|| message.to_owned(), str::to_owned)
}

/// The innermost error message (e.g. `Connection refused (os error 111)`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

    use super::*;

    /// A conflict cause's message yields the manager between its first quotes.
    #[test]
    fn conflict_manager_is_the_quoted_name() {
        assert_eq!(quoted(r#"conflict with "kubectl-edit" using autoscaling/v2"#), "kubectl-edit");
        assert_eq!(quoted("no quotes"), "no quotes");
    }

    /// Operations read like RBAC: verb, resource.group, name, namespace.
    #[test]
    fn operations_name_verb_and_resource() {
        let op = Operation::on::<HorizontalPodAutoscaler>("patch", "x", "ns");
        assert_eq!(op.to_string(), "patch horizontalpodautoscalers.autoscaling/x in namespace ns");
        assert_eq!(Operation::discovery("policy/v1").to_string(), "get /apis/policy/v1");
    }
}
