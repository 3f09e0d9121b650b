"""Tests of the chart's monitoring (docs/chart.md, "Monitoring"): the ServiceMonitor, the
PrometheusRule with the event stream's alerts (chart/monkeytown/files/alerts.yaml) and the Grafana
dashboard ConfigMap (chart/monkeytown/files/dashboard.json), all off by default.

The alerts are checked by the real promtool (`promtool check rules`, and `promtool test rules`
with the unit tests of chart/tests/alerts_test.yaml) on the rules the chart renders, so what is
tested is what ships. promtool comes from the Debian package prometheus
(scripts/install-test-tools.sh); without it these tests fail, they are never skipped. kubernetes-
validate has no schema for the Prometheus Operator's kinds, so their structure is checked here.
Rendered manifests are parsed, never grepped.

Run: bash scripts/install-test-tools.sh && .tools/venv/bin/pytest chart/tests
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from test_chart import (
    CHART,
    ENVS,
    EXTERNAL_REDIS,
    MONITORING_ON,
    REPO,
    env_map,
    event_stream,
    find,
    helm,
    one,
    render,
    values_file,
)

METRICS_DOC = REPO / "docs" / "metrics.md"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
ALERTS_TEST = Path(__file__).resolve().parent / "alerts_test.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"

SERVICE_MONITOR_ON = ("eventStream.monitoring.serviceMonitor.enabled=true",)
PROMETHEUS_RULE_ON = ("eventStream.monitoring.prometheusRule.enabled=true",)
DASHBOARD_ON = ("eventStream.monitoring.dashboard.enabled=true",)
MONITORING_KINDS = ("ServiceMonitor", "PrometheusRule")
DASHBOARD_LABEL = "grafana_dashboard"

# The Prometheus Operator CRDs' pattern for a Duration (monitoring.coreos.com/v1), e.g. 30s, 1m30s.
CRD_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
# The alerts the chart ships (docs/chart.md lists them with their conditions).
ALERTS = (
    "MtStreamMetricsDown",
    "MtStreamRedisDisconnected",
    "MtStreamSourceSilent",
    "MtStreamSourceLagging",
    "MtStreamSlowConsumerDisconnects",
    "MtStreamPodsFull",
    "MtStreamConnectionsNearLimit",
    "MtStreamMemoryNearLimit",
    "MtStreamDeliveryLagHigh",
    "MtStreamAuthKeyReloadFailing",
    "MtStreamAuthFailuresSpike",
    "MtStreamHistoryErrors",
    "MtStreamGithubWebhookRefused",
    "MtStreamGithubPollerMissing",
    "MtStreamGithubPollingFailing",
    "MtStreamGithubRateLimitLow",
)
# The GitHub poller's alerts ship only when the release polls (eventStream.github.repos); the
# rate-limit one also needs a token (an unauthenticated poller has 60 requests an hour, always
# under the threshold). MtStreamGithubWebhookRefused always ships: its counter cannot rise while
# the webhook route is off. GITHUB_ALERTS_ON turns them all on: the rule renders with it unless
# told otherwise.
GITHUB_POLLING_ALERTS = ("MtStreamGithubPollerMissing", "MtStreamGithubPollingFailing", "MtStreamGithubRateLimitLow")
GITHUB_ALERTS_ON = ("eventStream.github.repos={Monkeytown/web}", "secret.githubToken=ghp_alertsTestToken")
# What the dashboard must show (issue "An operator's first hour"): one metric of docs/metrics.md each.
DASHBOARD_METRICS = (
    "mt_stream_connections",
    "mt_stream_deliveries_total",
    "mt_stream_delivery_lag_seconds",
    "mt_stream_queued_bytes",
    "mt_stream_slow_consumer_disconnects_total",
    "mt_stream_connections_closed_total",
    "mt_stream_auth_failures_total",
    "mt_stream_resumes_total",
    "mt_stream_source_reconnects_total",
    "mt_stream_redis_connected",
)


# --- tools and helpers --------------------------------------------------------------------------


def _promtool(search_path: str | None = None) -> str:
    """promtool's path; fails the test (never skips) when it is not installed."""
    path = shutil.which("promtool", path=search_path)
    if path is None:
        pytest.fail("promtool is not on PATH: run scripts/install-test-tools.sh (Debian package prometheus)",
                    pytrace=False)
    return path


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO)


def prometheus_rule(env: str = "prod", *sets: str, github: bool = True) -> dict:
    """The rendered PrometheusRule; with github (the default) with GITHUB_ALERTS_ON, so every alert ships."""
    github_sets = GITHUB_ALERTS_ON if github else ()
    objs = render(env, *PROMETHEUS_RULE_ON, *github_sets, *sets, show_only="templates/prometheusrule-event-stream.yaml")
    assert [o["kind"] for o in objs] == ["PrometheusRule"]
    return objs[0]


def rules_by_alert(rule: dict) -> dict[str, dict]:
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    by_name = {r["alert"]: r for r in rules}
    assert len(by_name) == len(rules), "two rules share an alert name"
    return by_name


def write_rules(directory: Path, spec: dict) -> Path:
    """The PrometheusRule's spec as a Prometheus rules file, rules.yaml (the name alerts_test.yaml reads)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_unit_tests(directory: Path, spec: dict, tests: dict | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on alerts_test.yaml (or the given tests) against the rendered rules."""
    write_rules(directory, spec)
    test_file = directory / "alerts_test.yaml"
    if tests is None:
        shutil.copy(ALERTS_TEST, test_file)
    else:
        test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    return promtool("test", "rules", test_file.name, cwd=directory)


def series_selector(env: str) -> str:
    return f'namespace="monkeytown-{env}", pod=~"monkeytown-{env}-event-stream-[a-z0-9]+-[a-z0-9]+"'


def documented_metrics() -> dict[str, str]:
    """docs/metrics.md's table: metric name (as queried: counters with _total) -> type."""
    table = {}
    for line in METRICS_DOC.read_text().splitlines():
        m = re.match(r"^\| `(mt_stream_[a-z_]+)` \| (counter|gauge|histogram) \|", line)
        if m:
            table[m.group(1)] = m.group(2)
    assert len(table) > 20, f"could not parse the table of {METRICS_DOC}"
    return table


def unknown_metric_names(text: str, table: dict[str, str]) -> list[str]:
    """The mt_stream_* names in text that docs/metrics.md's table does not list (histograms also as
    <name>_bucket, _sum, _count; counters only with _total, as the table lists them)."""
    unknown = []
    for name in sorted(set(re.findall(r"mt_stream_[a-z_]+", text))):
        if name in table:
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base != name and table.get(base) == "histogram":
            continue
        unknown.append(name)
    return unknown


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def dashboard_queries(dashboard: dict) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            queries.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return queries


# --- off by default -----------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_monitoring_is_off_by_default(env):
    """No environment renders a ServiceMonitor, a PrometheusRule or a dashboard ConfigMap unless told to (they need the Prometheus Operator's CRDs and a Grafana sidecar)."""
    objs = render(env)
    for kind in MONITORING_KINDS:
        assert not find(objs, kind)
    assert not [o for o in find(objs, "ConfigMap") if DASHBOARD_LABEL in o["metadata"]["labels"]]
    assert not find(objs, "ConfigMap", f"monkeytown-{env}-event-stream-dashboard")
    values = yaml.safe_load((CHART / "values.yaml").read_text())["eventStream"]["monitoring"]
    assert [values[k]["enabled"] for k in ("serviceMonitor", "prometheusRule", "dashboard")] == [False, False, False]


@pytest.mark.parametrize("switch,kind,name", [
    (SERVICE_MONITOR_ON, "ServiceMonitor", "monkeytown-dev-event-stream"),
    (PROMETHEUS_RULE_ON, "PrometheusRule", "monkeytown-dev-event-stream"),
    (DASHBOARD_ON, "ConfigMap", "monkeytown-dev-event-stream-dashboard"),
], ids=["serviceMonitor", "prometheusRule", "dashboard"])
def test_each_switch_adds_exactly_its_object(switch, kind, name):
    """Each of serviceMonitor, prometheusRule and dashboard adds its one object and changes nothing else (dev: no generated Redis password)."""
    off, on = render("dev"), render("dev", *switch)
    added = [o for o in on if o not in off]
    assert [(o["kind"], o["metadata"]["name"]) for o in added] == [(kind, name)]
    assert [o for o in on if o not in added] == off


# --- ServiceMonitor -----------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_service_monitor_scrapes_metrics_on_the_event_stream_admin_port(env):
    """The ServiceMonitor selects exactly the event-stream Service (same labels as the Service's own selector) and scrapes /metrics over HTTP on its port named admin, every 30 s."""
    objs = render(env, *SERVICE_MONITOR_ON)
    sm = one(objs, "ServiceMonitor", f"monkeytown-{env}-event-stream")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) == {"selector", "endpoints"}
    selector = sm["spec"]["selector"]["matchLabels"]
    matched = [s["metadata"]["name"] for s in find(objs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert matched == [f"monkeytown-{env}-event-stream"]
    service = one(objs, "Service", f"monkeytown-{env}-event-stream")
    assert selector == service["spec"]["selector"]
    assert sm["spec"]["endpoints"] == [{"port": "admin", "path": "/metrics", "scheme": "http", "interval": "30s"}]
    assert "admin" in {p["name"] for p in service["spec"]["ports"]}
    # The Service's admin port is the container's admin port, the one MT_ADMIN_LISTEN listens on.
    admin = next(p for p in service["spec"]["ports"] if p["name"] == "admin")
    value = env_map(objs, event_stream(objs, env), "event-stream")["MT_ADMIN_LISTEN"]["value"]
    assert admin["targetPort"] == "admin" and value == f"0.0.0.0:{admin['port']}"
    assert CRD_DURATION.match(sm["spec"]["endpoints"][0]["interval"])


def test_service_monitor_values():
    """serviceMonitor.labels are added to the ServiceMonitor's labels (for a serviceMonitorSelector); interval "" leaves the Prometheus' own interval; a custom interval is used."""
    sm = one(render("prod", *SERVICE_MONITOR_ON, "eventStream.monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
                    "eventStream.monitoring.serviceMonitor.interval=1m30s"), "ServiceMonitor", "monkeytown-prod-event-stream")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["metadata"]["labels"]["app.kubernetes.io/instance"] == "monkeytown-prod"
    assert sm["spec"]["endpoints"][0]["interval"] == "1m30s"
    sm = one(render("prod", *SERVICE_MONITOR_ON, "eventStream.monitoring.serviceMonitor.interval="),
             "ServiceMonitor", "monkeytown-prod-event-stream")
    assert "interval" not in sm["spec"]["endpoints"][0]


@pytest.mark.parametrize("sets", [(), ("eventStream.networkPolicy.prometheusNamespaceLabels.kubernetes\\.io/metadata\\.name=monitoring",)],
                         ids=["same-namespace", "monitoring-namespace"])
def test_network_policy_admits_prometheus_to_the_port_the_service_monitor_scrapes(sets):
    """The port the ServiceMonitor (and the scrape annotations) name is the one the NetworkPolicy opens to the Prometheus pods (prometheusPodLabels, in prometheusNamespaceLabels' namespaces), and only to them and adminFrom."""
    objs = render("prod", *SERVICE_MONITOR_ON, *sets)
    sm = one(objs, "ServiceMonitor", "monkeytown-prod-event-stream")
    policy = one(objs, "NetworkPolicy", "monkeytown-prod-event-stream")
    port = sm["spec"]["endpoints"][0]["port"]
    rules = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {port}]
    assert len(rules) == 1
    prometheus_peer = rules[0]["from"][0]
    assert prometheus_peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    if sets:
        assert prometheus_peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    else:
        assert "namespaceSelector" not in prometheus_peer
    # The pod annotations point at the same port, by number.
    annotations = event_stream(objs, "prod")["spec"]["template"]["metadata"]["annotations"]
    admin = next(p for p in one(objs, "Service", "monkeytown-prod-event-stream")["spec"]["ports"] if p["name"] == port)
    assert annotations["prometheus.io/port"] == str(admin["port"])


def test_scrape_annotations_can_be_turned_off_beside_the_service_monitor():
    """eventStream.metrics.scrapeAnnotations=false removes the prometheus.io/* pod annotations (so a Prometheus that reads both does not scrape twice); the ServiceMonitor stays."""
    objs = render("prod", *SERVICE_MONITOR_ON, "eventStream.metrics.scrapeAnnotations=false")
    annotations = event_stream(objs, "prod")["spec"]["template"]["metadata"]["annotations"]
    assert not [k for k in annotations if k.startswith("prometheus.io/")]
    assert find(objs, "ServiceMonitor")


# --- PrometheusRule: structure ------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_prometheus_rule_structure(env):
    """The PrometheusRule holds one group with the ALERTS; each has an expr, a CRD-valid `for`, a severity (critical or warning) and summary, description and runbook_url annotations, with no Helm template left unrendered."""
    rule = prometheus_rule(env)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == f"monkeytown-{env}-event-stream"
    assert list(rule["spec"]) == ["groups"]
    assert [g["name"] for g in rule["spec"]["groups"]] == ["mt-stream"]
    by_alert = rules_by_alert(rule)
    assert sorted(by_alert) == sorted(ALERTS)
    for name, r in by_alert.items():
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert isinstance(r["expr"], str) and r["expr"].strip(), name
        assert CRD_DURATION.match(r.get("for", "0")), name
        assert set(r["labels"]) == {"severity"} and r["labels"]["severity"] in ("critical", "warning"), name
        assert set(r["annotations"]) == {"summary", "description", "runbook_url"}, name
        text = " ".join([r["expr"], *r["annotations"].values()])
        # Only Prometheus' own templates ($labels, $value) are left for Prometheus to expand.
        for template in re.findall(r"\{\{(.*?)\}\}", text):
            assert re.match(r"^ \$(labels\.[a-z_]+|value( \| .+)?) $", template), (name, template)


@pytest.mark.parametrize("env", ENVS)
def test_rules_select_only_their_release(env):
    """Every series selector of every expression names the release's namespace and the event-stream Deployment's pod names, which match that Deployment's pods and neither another component's nor another release's."""
    sel = series_selector(env)
    for name, r in rules_by_alert(prometheus_rule(env)).items():
        selectors = re.findall(r"[a-z_]+\{([^}]*)\}", r["expr"])
        assert selectors, name
        for s in selectors:
            assert s.startswith(sel), (name, s)
    pod_re = re.compile(f"monkeytown-{env}-event-stream-[a-z0-9]+-[a-z0-9]+")
    assert pod_re.fullmatch(f"monkeytown-{env}-event-stream-7c9d8f6b5-abcde")
    assert not pod_re.fullmatch(f"monkeytown-{env}-web-7c9d8f6b5-abcde")
    assert not pod_re.fullmatch(f"monkeytown-{env}-redis-7c9d8f6b5-abcde")
    other = "staging" if env != "staging" else "prod"
    assert not pod_re.fullmatch(f"monkeytown-{other}-event-stream-7c9d8f6b5-abcde")


def test_prometheus_rule_labels_and_runbook_base():
    """prometheusRule.labels reach the PrometheusRule (for a ruleSelector); every runbook_url is runbookBaseUrl plus an anchor."""
    base = "https://docs.example.com/mt-stream/operations.md"
    rule = prometheus_rule("prod", "eventStream.monitoring.prometheusRule.labels.release=kube-prometheus-stack",
                           f"eventStream.monitoring.runbookBaseUrl={base}")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for name, r in rules_by_alert(rule).items():
        assert re.fullmatch(re.escape(base) + r"#[a-z0-9_-]+", r["annotations"]["runbook_url"]), name


def test_runbook_urls_point_at_sections_of_operations_md():
    """Every runbook_url is the default runbookBaseUrl (docs/operations.md) plus the anchor of one of its headings."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())["eventStream"]["monitoring"]["runbookBaseUrl"]
    assert base.endswith("/docs/operations.md")
    anchors = github_anchors(OPERATIONS_DOC.read_text())
    for name, r in rules_by_alert(prometheus_rule("prod")).items():
        url, _, anchor = r["annotations"]["runbook_url"].partition("#")
        assert url == base, name
        assert anchor in anchors, f"{name}: #{anchor} is no heading of docs/operations.md ({sorted(anchors)})"


def test_thresholds_follow_the_values():
    """The thresholds come from the values: maxConnections (MT_MAX_CONNECTIONS), limits.memory (in bytes) and each prometheusRule threshold (all integers, so --set works: milliseconds become seconds, rates per minute are compared as 60 * rate)."""
    rules = rules_by_alert(prometheus_rule(
        "prod",
        "eventStream.ws.maxConnections=500",
        "eventStream.resources.limits.memory=2Gi",
        "eventStream.monitoring.prometheusRule.connectionsPercent=80",
        "eventStream.monitoring.prometheusRule.memoryPercent=85",
        "eventStream.monitoring.prometheusRule.deliveryLagP99Ms=100",
        "eventStream.monitoring.prometheusRule.slowConsumerDisconnectsPerMinute=150",
        "eventStream.monitoring.prometheusRule.authFailuresPerMinute=300",
        "eventStream.monitoring.prometheusRule.githubRateLimitRemaining=1000",
    ))
    assert rules["MtStreamConnectionsNearLimit"]["expr"].endswith(" / 500 > 80")
    assert rules["MtStreamMemoryNearLimit"]["expr"].endswith(f" / {2 * 1024 ** 3} > 85")
    assert rules["MtStreamDeliveryLagHigh"]["expr"].endswith(" > 0.1")
    assert rules["MtStreamSlowConsumerDisconnects"]["expr"].startswith("60 * sum by (namespace, pod) (rate(")
    assert rules["MtStreamSlowConsumerDisconnects"]["expr"].endswith(" > 150")
    assert rules["MtStreamAuthFailuresSpike"]["expr"].startswith("60 * sum by (namespace) (rate(")
    assert rules["MtStreamAuthFailuresSpike"]["expr"].endswith(" > 300")
    assert rules["MtStreamGithubRateLimitLow"]["expr"].splitlines()[0].endswith(" < 1000")
    defaults = rules_by_alert(prometheus_rule("prod"))
    assert defaults["MtStreamGithubRateLimitLow"]["expr"].splitlines()[0].endswith(" < 500")
    assert defaults["MtStreamConnectionsNearLimit"]["expr"].endswith(" / 1000 > 90")
    assert defaults["MtStreamMemoryNearLimit"]["expr"].endswith(f" / {1024 ** 3} > 90")
    assert defaults["MtStreamDeliveryLagHigh"]["expr"].endswith(" > 0.05")
    assert defaults["MtStreamSlowConsumerDisconnects"]["expr"].endswith(" > 60")
    assert defaults["MtStreamAuthFailuresSpike"]["expr"].endswith(" > 60")
    # The connection cap in the rule is the one the pods get.
    objs = render("prod", *PROMETHEUS_RULE_ON, "eventStream.ws.maxConnections=500")
    assert env_map(objs, event_stream(objs, "prod"), "event-stream")["MT_MAX_CONNECTIONS"]["value"] == "500"


@pytest.mark.parametrize("limit,expected", [("1Gi", 1024 ** 3), ("512Mi", 512 * 1024 ** 2), ("3Gi", 3 * 1024 ** 3),
                                            ("1536Mi", 1536 * 1024 ** 2), ("786432Ki", 786432 * 1024)])
def test_memory_alert_reads_the_memory_limit_in_bytes(limit, expected):
    """The memory alert divides by eventStream.resources.limits.memory in bytes (every form the schema allows)."""
    expr = rules_by_alert(prometheus_rule("prod", f"eventStream.resources.limits.memory={limit}",
                                          "eventStream.autoscaling.enabled=false"))["MtStreamMemoryNearLimit"]["expr"]
    assert f" / {expected} > " in expr


def test_memory_alert_refuses_a_limit_it_cannot_read():
    """A memory limit the alert cannot turn into bytes (1.5Gi: the schema refuses it, this is with --skip-schema-validation) fails to render, naming the value and the alert."""
    proc = helm("template", "monkeytown-prod", CHART, "-f", values_file("prod"), "--skip-schema-validation",
                "--set", "eventStream.autoscaling.enabled=false", "--set", "eventStream.resources.limits.memory=1.5Gi",
                "--set", PROMETHEUS_RULE_ON[0], "--show-only", "templates/prometheusrule-event-stream.yaml")
    assert proc.returncode != 0
    assert "eventStream.resources.limits.memory" in proc.stderr and "prometheusRule" in proc.stderr


@pytest.mark.parametrize("sets", [(), EXTERNAL_REDIS, ("redis.enabled=false", "externalRedis.existingSecret=redis-creds")],
                         ids=["in-chart", "external-url", "external-secret"])
def test_redis_alerts_apply_because_the_chart_always_configures_redis(sets):
    """The Redis alerts (mt_stream_redis_connected is always 0 with the embedded broker) ship unconditionally because every release that renders gives the hub a REDIS_URL; the chart refuses to render without one."""
    objs = render("prod", *PROMETHEUS_RULE_ON, *sets)
    assert "REDIS_URL" in env_map(objs, event_stream(objs, "prod"), "event-stream")
    assert {"MtStreamRedisDisconnected", "MtStreamSourceSilent"} <= set(rules_by_alert(one(objs, "PrometheusRule", "monkeytown-prod-event-stream")))
    proc = helm("template", "monkeytown-prod", CHART, "--set", "redis.enabled=false", "--set", PROMETHEUS_RULE_ON[0])
    assert proc.returncode != 0 and "externalRedis" in proc.stderr


@pytest.mark.parametrize("sets,absent", [
    ((), GITHUB_POLLING_ALERTS),
    ((f"secret.githubWebhookSecret={'w' * 32}", "secret.githubToken=ghp_alertsTestToken"), GITHUB_POLLING_ALERTS),
    (("eventStream.github.repos={Monkeytown/web}",), ("MtStreamGithubRateLimitLow",)),
    (("eventStream.github.repos={Monkeytown/web,acme}", "secret.githubToken=ghp_alertsTestToken"), ()),
    (("eventStream.github.repos={acme}", "secret.existingSecret=monkeytown-creds"), ()),
], ids=["no-github", "webhook-and-token-without-repos", "repos-without-token", "repos-and-token", "repos-and-existing-secret"])
def test_github_poller_alerts_ship_only_when_the_release_polls(sets, absent):
    """Without eventStream.github.repos no pod polls (mt_stream_github_poller_leader is 0 everywhere), so the poller's alerts are left out, the webhook alert stays (its counter cannot rise while the route is off); without a token (secret.githubToken or secret.existingSecret) MtStreamGithubRateLimitLow is left out: unauthenticated, the limit is 60 an hour."""
    alerts = set(rules_by_alert(prometheus_rule("prod", *sets, github=False)))
    assert alerts == set(ALERTS) - set(absent), set(ALERTS) ^ alerts
    assert "MtStreamGithubWebhookRefused" in alerts


# --- PrometheusRule: promtool -------------------------------------------------------------------


def test_promtool_is_required_not_skipped():
    """Without promtool the monitoring tests fail with a message saying how to install it (nothing is skipped for lack of a tool)."""
    with pytest.raises(pytest.fail.Exception, match="install-test-tools.sh"):
        _promtool(search_path="")
    assert _promtool()


@pytest.mark.parametrize("sets", [(), ("eventStream.ws.maxConnections=2000", "eventStream.resources.limits.memory=2Gi",
                                       "eventStream.monitoring.prometheusRule.deliveryLagP99Ms=3")],
                         ids=["defaults", "other-values"])
@pytest.mark.parametrize("env", ENVS)
def test_promtool_check_rules_passes(env, sets, tmp_path):
    """The rendered rules pass `promtool check rules` (YAML, PromQL, templates), for every environment."""
    path = write_rules(tmp_path, prometheus_rule(env, *sets)["spec"])
    proc = promtool("check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path):
    """`promtool check rules` really fails on a rule whose PromQL does not parse (the check above can fail)."""
    spec = prometheus_rule("prod")["spec"]
    spec["groups"][0]["rules"][0]["expr"] = "sum by (pod (up)"
    proc = promtool("check", "rules", write_rules(tmp_path, spec))
    assert proc.returncode != 0


def test_promtool_unit_tests_pass(tmp_path):
    """chart/tests/alerts_test.yaml passes against the rendered prod rules: each alert fires for the series that should fire it, with its labels and annotations, and not for the others."""
    proc = run_unit_tests(tmp_path, prometheus_rule("prod")["spec"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def _unit_tests() -> dict:
    return yaml.safe_load(ALERTS_TEST.read_text())


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    """alerts_test.yaml reads rules.yaml and has, for every alert the chart ships and no other, a case where it fires and a case with exp_alerts: []."""
    tests = _unit_tests()
    assert tests["rule_files"] == ["rules.yaml"]
    firing, silent = set(), set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    assert firing == set(ALERTS), set(ALERTS) ^ firing
    assert silent == set(ALERTS), set(ALERTS) ^ silent


def _mutations(expr: str, selector: str) -> dict[str, str]:
    return {
        # The alert never fires: every case that expects it fails.
        "never fires": "vector(0) > 1",
        # Series of other releases (and other components) count too: the cases with pods of
        # monkeytown-staging, or the web pod, see alerts they must not.
        "no release selector": expr.replace(selector + ", ", "").replace(selector, ""),
    }


@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_fail_when_the_alert_is_broken(alert, tmp_path):
    """The unit tests of each alert can fail: they fail when its expression never fires, and when it loses the selector of the release's pods."""
    spec = prometheus_rule("prod")["spec"]
    tests = _unit_tests()
    tests["tests"] = [g for g in tests["tests"] if any(c["alertname"] == alert for c in g["alert_rule_test"])]
    rule = next(r for r in spec["groups"][0]["rules"] if r["alert"] == alert)
    original = rule["expr"]
    for mutation, expr in _mutations(original, series_selector("prod")).items():
        assert expr != original, mutation
        rule["expr"] = expr
        proc = run_unit_tests(tmp_path, spec, tests)
        assert proc.returncode != 0, f"{alert}: the unit tests pass although it {mutation}: {expr}"
        assert f"alertname: {alert}" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    rule["expr"] = original
    proc = run_unit_tests(tmp_path, spec, tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- metric names -------------------------------------------------------------------------------


def test_unknown_metric_names_are_reported():
    """The name check sees a counter without _total, a made-up name and a histogram suffix on a gauge, and accepts the documented forms."""
    table = documented_metrics()
    assert unknown_metric_names("rate(mt_stream_deliveries[5m])", table) == ["mt_stream_deliveries"]
    assert unknown_metric_names("mt_stream_connections_total + mt_stream_queued_bytes_bucket", table) == [
        "mt_stream_connections_total", "mt_stream_queued_bytes_bucket"]
    assert unknown_metric_names(
        "rate(mt_stream_deliveries_total[5m]) mt_stream_delivery_lag_seconds_bucket mt_stream_delivery_lag_seconds_count "
        "mt_stream_batch_frames_sum mt_stream_delivery_lag_seconds mt_stream_connections", table) == []


def test_alert_metric_names_are_documented():
    """Every mt_stream_* name in the alerts (expressions, summaries, descriptions) is in docs/metrics.md's table, as queried."""
    table = documented_metrics()
    for name, r in rules_by_alert(prometheus_rule("prod")).items():
        text = " ".join([r["expr"], r["annotations"]["summary"], r["annotations"]["description"]])
        assert not unknown_metric_names(text, table), f"{name}: {unknown_metric_names(text, table)}"
    exprs = " ".join(r["expr"] for r in rules_by_alert(prometheus_rule("prod")).values())
    assert len(set(re.findall(r"mt_stream_[a-z_]+", exprs))) >= 10


def test_dashboard_metric_names_are_documented():
    """Every mt_stream_* name in the dashboard (queries, variables, descriptions) is in docs/metrics.md's table, as queried."""
    table = documented_metrics()
    text = DASHBOARD.read_text()
    assert not unknown_metric_names(text, table), unknown_metric_names(text, table)


# --- dashboard ----------------------------------------------------------------------------------


def test_dashboard_shows_what_an_operator_needs():
    """The dashboard queries connections, deliveries, delivery lag (p50 and p99), queued bytes, slow consumers, closes by reason, auth failures by reason, resumes by outcome, source reconnects and Redis connected."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = " ".join(dashboard_queries(dashboard))
    used = set(re.findall(r"mt_stream_[a-z_]+", queries))
    for metric in DASHBOARD_METRICS:
        assert metric in used or f"{metric}_bucket" in used, metric
    assert re.search(r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(mt_stream_delivery_lag_seconds_bucket", queries)
    assert re.search(r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(mt_stream_delivery_lag_seconds_bucket", queries)
    for label, metric in (("reason", "mt_stream_connections_closed_total"), ("reason", "mt_stream_auth_failures_total"),
                          ("outcome", "mt_stream_resumes_total")):
        assert re.search(rf"sum by \({label}\) \(rate\({metric}\{{", queries), metric


def test_dashboard_structure():
    """The dashboard is Grafana JSON with a fixed uid, a Prometheus data-source variable used by every panel, namespace and pod variables, unique panel ids, and every query scoped to the chosen namespace and pods."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mt-stream" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "pod"}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for selector in re.findall(r"[a-z_]+\{([^}]*)\}", target["expr"]):
                assert selector.startswith('namespace="$namespace", pod=~"$pod"'), (panel["title"], target["expr"])
    # No two panels overlap.
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_dashboard_config_map():
    """The dashboard ConfigMap carries the sidecar label grafana_dashboard: "1" and the common labels, holds files/dashboard.json unchanged under mt-stream.json, and takes extra labels and annotations from the values."""
    objs = render("prod", *DASHBOARD_ON)
    cm = one(objs, "ConfigMap", "monkeytown-prod-event-stream-dashboard")
    assert cm["metadata"]["labels"][DASHBOARD_LABEL] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == "monkeytown-prod"
    assert "annotations" not in cm["metadata"]
    assert list(cm["data"]) == ["mt-stream.json"]
    assert json.loads(cm["data"]["mt-stream.json"]) == json.loads(DASHBOARD.read_text())
    assert len(json.dumps(cm)) < 1024 * 1024, "a ConfigMap holds at most 1 MiB"
    cm = one(render("prod", *DASHBOARD_ON, f"eventStream.monitoring.dashboard.labels.{DASHBOARD_LABEL}=null",
                    "eventStream.monitoring.dashboard.labels.grafana=dashboards",
                    "eventStream.monitoring.dashboard.annotations.grafana_folder=Monkeytown"),
             "ConfigMap", "monkeytown-prod-event-stream-dashboard")
    assert DASHBOARD_LABEL not in cm["metadata"]["labels"] and cm["metadata"]["labels"]["grafana"] == "dashboards"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Monkeytown"}


# --- values, schema, notes ----------------------------------------------------------------------


BAD_MONITORING_VALUES = {
    "misspelt switch": ("eventStream.monitoring.serviceMonitor.enable=true", "enable"),
    "interval in words": ("eventStream.monitoring.serviceMonitor.interval=30 seconds", "interval"),
    "interval units out of order": ("eventStream.monitoring.serviceMonitor.interval=30s1m", "interval"),
    "percent above 100": ("eventStream.monitoring.prometheusRule.connectionsPercent=150", "connectionsPercent"),
    "zero lag threshold": ("eventStream.monitoring.prometheusRule.deliveryLagP99Ms=0", "deliveryLagP99Ms"),
    "lag in seconds": ("eventStream.monitoring.prometheusRule.deliveryLagP99Seconds=1", "deliveryLagP99Seconds"),
    "zero rate-limit threshold": ("eventStream.monitoring.prometheusRule.githubRateLimitRemaining=0", "githubRateLimitRemaining"),
    "runbook base with an anchor": ("eventStream.monitoring.runbookBaseUrl=https://example.com/ops.md#x", "runbookBaseUrl"),
    "runbook base not a URL": ("eventStream.monitoring.runbookBaseUrl=docs/operations.md", "runbookBaseUrl"),
}


@pytest.mark.parametrize("case", sorted(BAD_MONITORING_VALUES))
def test_schema_rejects_bad_monitoring_values(case):
    """A bad monitoring value fails helm template because of values.schema.json, naming the field."""
    setting, field = BAD_MONITORING_VALUES[case]
    proc = helm("template", "monkeytown-dev", CHART, "-f", values_file("dev"), "--set", setting)
    assert proc.returncode != 0
    assert field in proc.stderr and "schema" in proc.stderr.lower(), proc.stderr


def test_everything_on_lints():
    """helm lint --strict passes with every monitoring object on."""
    args = [a for s in MONITORING_ON for a in ("--set", s)]
    proc = helm("lint", "--strict", CHART, "-f", values_file("prod"), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_notes_name_the_monitoring_objects_and_the_network_policy_peer():
    """With monitoring on, the install notes name each object and say which Prometheus pods the NetworkPolicy admits to the admin port."""
    args = [a for s in MONITORING_ON for a in ("--set", s)]
    notes = helm("install", "monkeytown-prod", CHART, "--dry-run=client", "-n", "monkeytown-prod", "-f", values_file("prod"),
                 *args, check=True).stdout
    for name in ("ServiceMonitor monkeytown-prod-event-stream", "PrometheusRule monkeytown-prod-event-stream",
                 "ConfigMap monkeytown-prod-event-stream-dashboard"):
        assert name in notes
    assert "app.kubernetes.io/name=prometheus in namespace monkeytown-prod" in notes
    plain = helm("install", "monkeytown-prod", CHART, "--dry-run=client", "-n", "monkeytown-prod", "-f", values_file("prod"),
                 check=True).stdout
    assert "Monitoring" not in plain
