//! Pure builders of the two objects `deploy` owns: the event-stream HorizontalPodAutoscaler
//! (`autoscaling/v2`) and PodDisruptionBudget (`policy/v1`), plus their YAML rendering.
//!
//! Names and labels are a contract with the chart's `_helpers.tpl`: fullname
//! `monkeytown-<environment>` (the release name does not enter it), component name
//! `<fullname>-event-stream`, selector labels `app.kubernetes.io/{name,instance,component}`.
//! No `metadata.namespace`: like the chart's templates, the namespace comes from where the
//! objects are applied. Nothing here talks to a cluster; see [`super::apply`].

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec, MetricTarget,
    PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::profile::{
    Environment, Profile, Targets, CONNECTIONS_METRIC, PDB_MAX_UNAVAILABLE, SCALE_UP_PERCENT, SCALE_UP_PERIOD,
    SCALE_UP_PODS, SCALE_UP_WINDOW,
};
use mt_budget::Budget;

/// The chart's name, `app.kubernetes.io/name` of every Monkeytown object.
pub const APP_NAME: &str = "monkeytown";
/// The component `deploy` scales.
pub const COMPONENT: &str = "event-stream";
/// `app.kubernetes.io/managed-by` of the objects `deploy` owns (the chart writes `Helm`).
pub const MANAGED_BY: &str = "mt-stream";
/// `app.kubernetes.io/version`: the crate version, which is the chart's `appVersion`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// What the objects are built from: where they go and the pod's budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Picks the profile and the names.
    pub environment: Environment,
    /// Helm release name: the `app.kubernetes.io/instance` label (and so the PDB selector).
    pub release: String,
    /// The pod's budget; memory and connection targets derive from it.
    pub budget: Budget,
    /// Adds the `mt_stream_connections` Pods metric (needs a custom-metrics adapter).
    pub connections_metric: bool,
}

impl Settings {
    /// The chart's fullname: `monkeytown-<environment>`.
    pub fn fullname(&self) -> String {
        format!("{APP_NAME}-{}", self.environment)
    }

    /// Name of the event-stream Deployment, HPA and PDB: `<fullname>-event-stream`.
    pub fn component_name(&self) -> String {
        format!("{}-{COMPONENT}", self.fullname())
    }

    /// Labels that never change for the event-stream pods; the PDB selects on exactly these.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_owned(), APP_NAME.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.release.clone()),
            (LABEL_COMPONENT.to_owned(), COMPONENT.to_owned()),
        ])
    }

    /// Labels of the HPA and PDB: the selector labels plus version and manager.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(LABEL_VERSION.to_owned(), VERSION.to_owned());
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        labels
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta { name: Some(self.component_name()), labels: Some(self.labels()), ..Default::default() }
    }
}

/// The HPA and PDB, in the order they are printed and applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Objects {
    pub horizontal_pod_autoscaler: HorizontalPodAutoscaler,
    pub pod_disruption_budget: PodDisruptionBudget,
}

impl Objects {
    /// Builds both objects from `settings`.
    pub fn build(settings: &Settings) -> Objects {
        Objects {
            horizontal_pod_autoscaler: horizontal_pod_autoscaler(settings),
            pod_disruption_budget: pod_disruption_budget(settings),
        }
    }

    /// Renders both objects as one YAML stream: HPA then PDB, each document opened by `---`.
    /// The output is byte-for-byte stable for the same settings.
    pub fn to_yaml(&self) -> Result<String, serde_norway::Error> {
        let hpa = serde_norway::to_string(&self.horizontal_pod_autoscaler)?;
        let pdb = serde_norway::to_string(&self.pod_disruption_budget)?;
        Ok(format!("---\n{hpa}---\n{pdb}"))
    }
}

/// The event-stream HPA: CPU and memory `AverageValue` targets (plus connections behind a
/// flag), fast scale-up, slow one-pod-at-a-time scale-down.
pub fn horizontal_pod_autoscaler(settings: &Settings) -> HorizontalPodAutoscaler {
    let profile = Profile::of(settings.environment);
    let targets = Targets::from_budget(&settings.budget);
    let mut metrics =
        vec![resource_metric("cpu", targets.cpu.to_string()), resource_metric("memory", targets.memory.to_string())];
    if settings.connections_metric {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier { name: CONNECTIONS_METRIC.to_owned(), selector: None },
                target: average_value(targets.connections.to_string()),
            }),
            ..Default::default()
        });
    }
    HorizontalPodAutoscaler {
        metadata: settings.metadata(),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: settings.component_name(),
            },
            min_replicas: Some(profile.min_replicas),
            max_replicas: profile.max_replicas,
            metrics: Some(metrics),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_up: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(seconds(SCALE_UP_WINDOW)),
                    select_policy: Some("Max".to_owned()),
                    policies: Some(vec![
                        scaling_policy("Percent", SCALE_UP_PERCENT, SCALE_UP_PERIOD),
                        scaling_policy("Pods", SCALE_UP_PODS, SCALE_UP_PERIOD),
                    ]),
                    ..Default::default()
                }),
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(seconds(profile.scale_down_window)),
                    select_policy: Some("Min".to_owned()),
                    policies: Some(vec![scaling_policy("Pods", 1, profile.scale_down_period)]),
                    ..Default::default()
                }),
            }),
        },
        ..Default::default()
    }
}

/// The event-stream PDB: `maxUnavailable: 1` on the selector labels, and unhealthy pods may
/// always be evicted, so neither a one-replica deployment nor a crash loop blocks a drain.
pub fn pod_disruption_budget(settings: &Settings) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: settings.metadata(),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(PDB_MAX_UNAVAILABLE)),
            selector: Some(LabelSelector { match_labels: Some(settings.selector_labels()), ..Default::default() }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resource_metric(name: &str, average: String) -> MetricSpec {
    MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource { name: name.to_owned(), target: average_value(average) }),
        ..Default::default()
    }
}

fn average_value(quantity: String) -> MetricTarget {
    MetricTarget { type_: "AverageValue".to_owned(), average_value: Some(Quantity(quantity)), ..Default::default() }
}

fn scaling_policy(type_: &str, value: i32, period: std::time::Duration) -> HPAScalingPolicy {
    HPAScalingPolicy { type_: type_.to_owned(), value, period_seconds: seconds(period) }
}

/// Whole seconds as the API's `int32`; every period here is a small constant.
fn seconds(duration: std::time::Duration) -> i32 {
    i32::try_from(duration.as_secs()).expect("profile durations fit in an int32 of seconds")
}

#[cfg(test)]
mod tests;
