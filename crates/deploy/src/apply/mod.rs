//! Talking to the cluster: building a kube [`Client`] from a kubeconfig (or the pod's service
//! account), server-side-applying the [`Objects`] with field manager [`FIELD_MANAGER`], and
//! turning every API failure into an [`ApplyError`] an operator can act on.
//!
//! The sequence, one request each: API discovery of `autoscaling/v2` and `policy/v1` (is the
//! version served?), then per object a GET (does it exist, what does it hold?) and the apply
//! PATCH, then a GET of the target Deployment (missing = a warning, not an error). Comparing the
//! object before and after the PATCH tells created / configured / unchanged, for real and
//! server-side dry runs alike.

use std::fmt;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::objects::Objects;

mod error;

use error::classify;
pub use error::{ApplyError, Conflict, Operation};

/// The one field manager `deploy` applies as; `kubectl` shows it in `managedFields`.
pub const FIELD_MANAGER: &str = "mt-stream";

/// How to apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// `dryRun=All`: the API server validates and answers, persists nothing.
    pub dry_run: bool,
    /// `force=true`: take ownership of fields another manager holds, as `kubectl --force-conflicts`.
    pub force_conflicts: bool,
}

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// One applied object, printed like kubectl: `horizontalpodautoscaler.autoscaling/NAME created`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// `kind.group` in lower case, as kubectl prints it.
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
    pub dry_run: bool,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.kind, self.name, self.outcome)?;
        if self.dry_run {
            f.write_str(" (server dry run)")?;
        }
        Ok(())
    }
}

/// What one `deploy` run did: the objects in apply order, and warnings that did not stop it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<Applied>,
    pub warnings: Vec<String>,
}

/// Builds a client: `--kubeconfig` if given, else `KUBECONFIG` / `~/.kube/config` (with
/// `--context`), else the in-cluster service account.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, ApplyError> {
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| ApplyError::Kubeconfig { path: Some(path.to_owned()), source };
            let file = Kubeconfig::read_from(path).map_err(|source| match source {
                KubeconfigError::ReadConfig(ref io, _) if io.kind() == std::io::ErrorKind::NotFound => {
                    ApplyError::NoKubeconfig { reason: format!("{} does not exist", path.display()) }
                }
                source => kubeconfig_error(source),
            })?;
            Config::from_custom_kubeconfig(file, &options).await.map_err(kubeconfig_error)?
        }
        None => match Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(error) if is_missing_file(&error) && context.is_none() => {
                Config::incluster().map_err(|in_cluster| ApplyError::NoKubeconfig {
                    reason: format!("{error}; not in a pod: {in_cluster}"),
                })?
            }
            Err(error) if is_missing_file(&error) => {
                return Err(ApplyError::NoKubeconfig { reason: error.to_string() })
            }
            Err(source) => return Err(ApplyError::Kubeconfig { path: None, source }),
        },
    };
    Client::try_from(config).map_err(|source| ApplyError::Client { source })
}

fn is_missing_file(error: &KubeconfigError) -> bool {
    match error {
        KubeconfigError::FindPath => true,
        KubeconfigError::ReadConfig(io, _) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Server-side-applies `objects` into `namespace` (HPA, then PDB) and checks the target
/// Deployment exists. Stops at the first error.
pub async fn apply(
    client: &Client,
    namespace: &str,
    objects: &Objects,
    options: ApplyOptions,
) -> Result<Report, ApplyError> {
    ensure_served(client, "autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler").await?;
    ensure_served(client, "policy/v1", "poddisruptionbudgets", "PodDisruptionBudget").await?;

    let mut report = Report::default();
    report.applied.push(
        apply_one::<HorizontalPodAutoscaler>(
            client,
            namespace,
            &objects.horizontal_pod_autoscaler,
            "horizontalpodautoscaler.autoscaling",
            options,
        )
        .await?,
    );
    report.applied.push(
        apply_one::<PodDisruptionBudget>(
            client,
            namespace,
            &objects.pod_disruption_budget,
            "poddisruptionbudget.policy",
            options,
        )
        .await?,
    );

    let target = &objects.horizontal_pod_autoscaler.spec.scale_target_ref.name;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    match deployments.get_opt(target).await {
        Ok(Some(_)) => {}
        Ok(None) => report.warnings.push(format!(
            "Deployment {target} not found in namespace {namespace}: the HPA scales nothing until the chart installs it"
        )),
        // Not being allowed to read Deployments must not fail a deploy that succeeded.
        Err(error) => report.warnings.push(format!(
            "could not check Deployment {target}: {}",
            classify(Operation::on::<Deployment>("get", target, namespace), error)
        )),
    }
    Ok(report)
}

/// Fails with [`ApplyError::NotServed`] unless discovery lists `plural` under `api_version`.
async fn ensure_served(
    client: &Client,
    api_version: &'static str,
    plural: &str,
    kind: &'static str,
) -> Result<(), ApplyError> {
    match client.list_api_group_resources(api_version).await {
        Ok(list) if list.resources.iter().any(|r| r.name == plural) => Ok(()),
        Ok(_) => Err(ApplyError::NotServed { api_version, kind }),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(ApplyError::NotServed { api_version, kind }),
        Err(error) => Err(classify(Operation::discovery(api_version), error)),
    }
}

async fn apply_one<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    kind: &'static str,
    options: ApplyOptions,
) -> Result<Applied, ApplyError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.clone().expect("built objects are named");
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let before =
        api.get_opt(&name).await.map_err(|error| classify(Operation::on::<K>("get", &name, namespace), error))?;

    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = options.force_conflicts;
    params.dry_run = options.dry_run;
    let after = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|error| classify(Operation::on::<K>("patch", &name, namespace), error))?;

    let outcome = match before {
        None => Outcome::Created,
        Some(before) if same_content(&before, &after) => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    };
    Ok(Applied { kind, name, outcome, dry_run: options.dry_run })
}

/// True when the apply changed nothing we manage: same resourceVersion (a real apply that
/// changes anything bumps it) and same spec, labels and annotations (a dry run does not bump
/// the resourceVersion, so its content tells).
fn same_content<K: Resource + Serialize>(before: &K, after: &K) -> bool {
    let (b, a) = (before.meta(), after.meta());
    let spec = |object: &K| serde_json::to_value(object).ok().and_then(|mut v| v.get_mut("spec").map(std::mem::take));
    b.resource_version == a.resource_version
        && b.labels == a.labels
        && b.annotations == a.annotations
        && spec(before) == spec(after)
}
