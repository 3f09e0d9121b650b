//! The objects `deploy` builds, checked field by field against the budget and profiles.

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
