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
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use mt_budget::ByteSize;

    fn settings(environment: Environment) -> Settings {
        Settings {
            environment,
            release: format!("monkeytown-{environment}"),
            budget: Budget::default(),
            connections_metric: false,
        }
    }

    fn hpa_spec(settings: &Settings) -> HorizontalPodAutoscalerSpec {
        horizontal_pod_autoscaler(settings).spec
    }

    fn target_of(metric: &MetricSpec) -> (&str, &str, &str) {
        let (name, target) = match (&metric.resource, &metric.pods) {
            (Some(resource), None) => (resource.name.as_str(), &resource.target),
            (None, Some(pods)) => (pods.metric.name.as_str(), &pods.target),
            other => panic!("unexpected metric source {other:?}"),
        };
        let value = target.average_value.as_ref().expect("an AverageValue target");
        (metric.type_.as_str(), name, value.0.as_str())
    }

    /// Every env names both objects `monkeytown-<env>-event-stream` and labels them as the chart does.
    #[test]
    fn names_and_labels_per_env() {
        for env in Environment::ALL {
            let s = settings(env);
            let objects = Objects::build(&s);
            let expected_labels = BTreeMap::from([
                (LABEL_NAME.to_owned(), "monkeytown".to_owned()),
                (LABEL_INSTANCE.to_owned(), format!("monkeytown-{env}")),
                (LABEL_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
                (LABEL_MANAGED_BY.to_owned(), "mt-stream".to_owned()),
                (LABEL_COMPONENT.to_owned(), "event-stream".to_owned()),
            ]);
            for meta in [&objects.horizontal_pod_autoscaler.metadata, &objects.pod_disruption_budget.metadata] {
                assert_eq!(meta.name.as_deref(), Some(format!("monkeytown-{env}-event-stream").as_str()));
                assert_eq!(meta.labels.as_ref(), Some(&expected_labels));
                assert_eq!(meta.namespace, None, "namespace comes from where it is applied");
                assert_eq!(meta.annotations, None);
            }
            let target = hpa_spec(&s).scale_target_ref;
            assert_eq!(target.api_version.as_deref(), Some("apps/v1"));
            assert_eq!(target.kind, "Deployment");
            assert_eq!(target.name, format!("monkeytown-{env}-event-stream"));
        }
    }

    /// Replica bounds and scale-down pace per env are the profile table's.
    #[test]
    fn replicas_and_scale_down_per_env() {
        let expected = [
            (Environment::Dev, 1, 2, 120, 60),
            (Environment::Staging, 2, 4, 300, 120),
            (Environment::Prod, 3, 10, 600, 300),
        ];
        for (env, min, max, window, period) in expected {
            let spec = hpa_spec(&settings(env));
            assert_eq!(spec.min_replicas, Some(min), "{env}");
            assert_eq!(spec.max_replicas, max, "{env}");
            let down = spec.behavior.expect("behavior").scale_down.expect("scaleDown");
            assert_eq!(down.stabilization_window_seconds, Some(window), "{env}");
            assert_eq!(down.select_policy.as_deref(), Some("Min"), "{env}");
            assert_eq!(
                down.policies,
                Some(vec![HPAScalingPolicy { type_: "Pods".into(), value: 1, period_seconds: period }]),
                "{env}"
            );
            assert_eq!(down.tolerance, None);
        }
    }

    /// Scale-up is immediate and the same everywhere: Percent 100 or Pods 2 per 60 s, the larger.
    #[test]
    fn scale_up_is_fast_in_every_env() {
        for env in Environment::ALL {
            let up = hpa_spec(&settings(env)).behavior.expect("behavior").scale_up.expect("scaleUp");
            assert_eq!(up.stabilization_window_seconds, Some(0));
            assert_eq!(up.select_policy.as_deref(), Some("Max"));
            assert_eq!(
                up.policies,
                Some(vec![
                    HPAScalingPolicy { type_: "Percent".into(), value: 100, period_seconds: 60 },
                    HPAScalingPolicy { type_: "Pods".into(), value: 2, period_seconds: 60 },
                ])
            );
        }
    }

    /// Default metrics: CPU 350m and memory 768Mi as AverageValue, no connections metric.
    #[test]
    fn default_metrics_are_cpu_and_memory_average_values() {
        for env in Environment::ALL {
            let metrics = hpa_spec(&settings(env)).metrics.expect("metrics");
            let targets: Vec<_> = metrics.iter().map(target_of).collect();
            assert_eq!(targets, [("Resource", "cpu", "350m"), ("Resource", "memory", "768Mi")], "{env}");
            for metric in &metrics {
                let target = &metric.resource.as_ref().expect("resource").target;
                assert_eq!(target.type_, "AverageValue");
                assert_eq!(target.average_utilization, None);
                assert_eq!(target.value, None);
            }
        }
    }

    /// The connections flag adds a Pods metric on mt_stream_connections at 70% of the cap.
    #[test]
    fn connections_metric_targets_70_percent_of_the_cap() {
        let s = Settings { connections_metric: true, ..settings(Environment::Prod) };
        let metrics = hpa_spec(&s).metrics.expect("metrics");
        assert_eq!(metrics.len(), 3);
        assert_eq!(target_of(&metrics[2]), ("Pods", "mt_stream_connections", "700"));
        assert_eq!(metrics[2].pods.as_ref().expect("pods").metric.selector, None);
    }

    /// Changing the budget moves the memory and connections targets and nothing else.
    #[test]
    fn budget_changes_the_output_as_the_rules_say() {
        let base = Settings { connections_metric: true, ..settings(Environment::Staging) };
        let bigger = Settings {
            budget: Budget {
                max_connections: NonZeroUsize::new(4000).expect("non-zero"),
                memory_limit: ByteSize(4 << 30),
                ..Budget::default()
            },
            ..base.clone()
        };
        let (before, after) = (hpa_spec(&base), hpa_spec(&bigger));
        let targets = |spec: &HorizontalPodAutoscalerSpec| -> Vec<(String, String, String)> {
            let metrics = spec.metrics.as_ref().expect("metrics");
            metrics.iter().map(target_of).map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())).collect()
        };
        assert_eq!(
            targets(&after),
            [
                ("Resource".into(), "cpu".into(), "350m".into()),
                ("Resource".into(), "memory".into(), "3Gi".into()),
                ("Pods".into(), "mt_stream_connections".into(), "2800".into()),
            ]
        );
        assert_ne!(targets(&before), targets(&after));
        // Everything but the metrics is untouched by the budget.
        let strip = |spec: HorizontalPodAutoscalerSpec| HorizontalPodAutoscalerSpec { metrics: None, ..spec };
        assert_eq!(strip(before), strip(after));
        assert_eq!(pod_disruption_budget(&base), pod_disruption_budget(&bigger));
    }

    /// The PDB allows one pod down, always evicts unhealthy pods and selects the component.
    #[test]
    fn pdb_never_blocks_a_drain() {
        for env in Environment::ALL {
            let spec = pod_disruption_budget(&settings(env)).spec.expect("spec");
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(spec.min_available, None);
            assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
            let selector = spec.selector.expect("selector");
            assert_eq!(selector.match_expressions, None);
            assert_eq!(
                selector.match_labels,
                Some(BTreeMap::from([
                    (LABEL_NAME.to_owned(), "monkeytown".to_owned()),
                    (LABEL_INSTANCE.to_owned(), format!("monkeytown-{env}")),
                    (LABEL_COMPONENT.to_owned(), "event-stream".to_owned()),
                ]))
            );
        }
    }

    /// Another release changes the instance label and selector, not the names (as the chart does).
    #[test]
    fn release_changes_instance_not_names() {
        let s = Settings { release: "canary".into(), ..settings(Environment::Prod) };
        let objects = Objects::build(&s);
        let labels = objects.pod_disruption_budget.metadata.labels.expect("labels");
        assert_eq!(labels[LABEL_INSTANCE], "canary");
        let selector = objects.pod_disruption_budget.spec.expect("spec").selector.expect("selector");
        assert_eq!(selector.match_labels.expect("labels")[LABEL_INSTANCE], "canary");
        assert_eq!(objects.horizontal_pod_autoscaler.metadata.name.as_deref(), Some("monkeytown-prod-event-stream"));
    }

    /// The YAML is HPA then PDB, each opened by `---`, and the same bytes on every call.
    #[test]
    fn yaml_is_ordered_and_stable() {
        let objects = Objects::build(&settings(Environment::Staging));
        let yaml = objects.to_yaml().expect("serializes");
        assert_eq!(yaml, objects.to_yaml().expect("serializes"));
        let docs: Vec<_> = yaml.split("---\n").collect();
        assert_eq!(docs.len(), 3, "{yaml}");
        assert_eq!(docs[0], "");
        assert!(docs[1].starts_with("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n"));
        assert!(docs[2].starts_with("apiVersion: policy/v1\nkind: PodDisruptionBudget\n"));
        assert!(!yaml.contains("status"), "no status in what we apply: {yaml}");
    }
}
