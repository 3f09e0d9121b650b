"""Tests of the chart's GitHub source (docs/chart.md, "GitHub source"; how to set up the webhook:
docs/github.md; every setting: docs/configuration.md): MT_GITHUB_REPOS, MT_GITHUB_API_URL,
MT_GITHUB_WEBHOOK_SILENCE_SECONDS and MT_GITHUB_LEASE_SECONDS in the event-stream ConfigMap,
MT_GITHUB_WEBHOOK_SECRET from the Secret's key github-webhook-secret (the chart's, or
secret.existingSecret's), and the event-stream Ingress' path /github/webhook.

The webhook secret is a secret: it lives in the Secret, reaches the container through a
secretKeyRef and never appears in a ConfigMap, the Deployment or the install notes. Rendered
manifests are parsed, never grepped.

Run: bash scripts/install-test-tools.sh && .tools/venv/bin/pytest chart/tests
"""

from __future__ import annotations

import base64

import pytest
import yaml

from test_chart import (
    CHART,
    ENVS,
    GITHUB_ON,
    GITHUB_WEBHOOK_SECRET,
    NETWORK_POLICY_CUSTOM,
    OLDEST_KUBERNETES,
    REPO,
    env_map,
    event_stream,
    find,
    helm,
    _latest_kubernetes,
    one,
    render,
    run,
    schema_node,
    validate_configs,
    values_comment,
    values_file,
)
from test_chart_auth import _documented_default

CHART_DOC = REPO / "docs" / "chart.md"
WEBHOOK_PATH = "/github/webhook"
# The variables of the GitHub source the chart sets only when configured (GITHUB_TOKEN, the
# poller's token, predates them and is always a secretKeyRef).
CONDITIONAL = ("MT_GITHUB_WEBHOOK_SECRET", "MT_GITHUB_REPOS", "MT_GITHUB_API_URL")


def _env(objs: list[dict], env: str = "dev") -> dict[str, dict]:
    return env_map(objs, event_stream(objs, env), "event-stream")


def _values(objs: list[dict], env: str = "dev") -> dict[str, str | None]:
    return {k: v.get("value") for k, v in _env(objs, env).items()}


def _secret_data(objs: list[dict], name: str) -> dict[str, str]:
    """The Secret's data, base64-decoded."""
    return {k: base64.b64decode(v).decode() for k, v in one(objs, "Secret", name)["data"].items()}


def _paths(objs: list[dict], env: str = "dev") -> dict[str, dict]:
    """The event-stream Ingress' paths, by path."""
    ingress = one(objs, "Ingress", f"monkeytown-{env}-event-stream")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    by_path = {p["path"]: p for p in paths}
    assert len(by_path) == len(paths), f"a path is routed twice: {paths}"
    return by_path


def _annotations(objs: list[dict]) -> dict[str, str]:
    return event_stream(objs)["spec"]["template"]["metadata"]["annotations"]


def _template(*sets: str, skip_schema: bool = False):
    args = ["template", "monkeytown-dev", CHART, "-f", values_file("dev")]
    for s in sets:
        args += ["--set", s]
    if skip_schema:
        args.append("--skip-schema-validation")
    return helm(*args)


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_by_default_no_repository_is_polled_and_the_webhook_is_off(env):
    """By default the container gets no MT_GITHUB_WEBHOOK_SECRET, MT_GITHUB_REPOS or MT_GITHUB_API_URL (no webhook, no polling, the binary's API URL), and the binary's documented MT_GITHUB_WEBHOOK_SILENCE_SECONDS and MT_GITHUB_LEASE_SECONDS; the Secret holds no webhook secret; the event-stream Ingress routes /github/webhook (Exact) to the event-stream Service's ws port, beside /ws."""
    objs = render(env)
    env_vars = _env(objs, env)
    assert not [name for name in CONDITIONAL if name in env_vars]
    value = _values(objs, env)
    assert value["MT_GITHUB_WEBHOOK_SILENCE_SECONDS"] == _documented_default("--github-webhook-silence-seconds") == "900"
    assert value["MT_GITHUB_LEASE_SECONDS"] == _documented_default("--github-lease-seconds") == "15"
    assert _documented_default("--github-repos").startswith("empty")
    assert _documented_default("--github-api-url") == "https://api.github.com"
    for name in ("MT_GITHUB_WEBHOOK_SILENCE_SECONDS", "MT_GITHUB_LEASE_SECONDS"):
        assert env_vars[name]["from"] == "configMap"
    assert "github-webhook-secret" not in one(objs, "Secret", f"monkeytown-{env}")["data"]
    paths = _paths(objs, env)
    assert set(paths) == {"/ws", WEBHOOK_PATH}
    assert paths[WEBHOOK_PATH]["pathType"] == "Exact"
    assert paths[WEBHOOK_PATH]["backend"] == {
        "service": {"name": f"monkeytown-{env}-event-stream", "port": {"name": "ws"}}}
    assert paths[WEBHOOK_PATH]["backend"] == paths["/ws"]["backend"]
    service = one(objs, "Service", f"monkeytown-{env}-event-stream")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}["ws"] == "ws"


def test_values_yaml_defaults():
    """values.yaml's eventStream.github and secret.githubWebhookSecret defaults."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["eventStream"]["github"] == {
        "repos": [], "apiUrl": "", "webhookSilenceSeconds": 900, "leaseSeconds": 15, "webhook": {"ingress": True}}
    assert values["secret"]["githubWebhookSecret"] == ""


# --- repositories, API URL, timings --------------------------------------------------------------


def test_repos_and_api_url_reach_the_config_map():
    """repos is joined with commas into the ConfigMap's MT_GITHUB_REPOS, apiUrl becomes MT_GITHUB_API_URL, webhookSilenceSeconds and leaseSeconds MT_GITHUB_WEBHOOK_SILENCE_SECONDS and MT_GITHUB_LEASE_SECONDS; changing them rolls the pods through checksum/config only."""
    sets = ("eventStream.github.repos={Monkeytown/web,acme}",
            "eventStream.github.apiUrl=https://github.example.com/api/v3",
            "eventStream.github.webhookSilenceSeconds=600",
            "eventStream.github.leaseSeconds=30")
    objs = render("dev", *sets)
    data = one(objs, "ConfigMap", "monkeytown-dev-event-stream")["data"]
    assert data["MT_GITHUB_REPOS"] == "Monkeytown/web,acme"
    assert data["MT_GITHUB_API_URL"] == "https://github.example.com/api/v3"
    assert data["MT_GITHUB_WEBHOOK_SILENCE_SECONDS"] == "600"
    assert data["MT_GITHUB_LEASE_SECONDS"] == "30"
    env_vars = _env(objs)
    assert env_vars["MT_GITHUB_REPOS"]["from"] == env_vars["MT_GITHUB_API_URL"]["from"] == "configMap"
    assert "MT_GITHUB_WEBHOOK_SECRET" not in env_vars
    # dev: no generated Redis password, so the Secret renders the same every time.
    before, after = _annotations(render("dev")), _annotations(objs)
    assert after["checksum/config"] != before["checksum/config"]
    assert after["checksum/secret"] == before["checksum/secret"]


def test_one_repository_and_an_empty_list(tmp_path):
    """A single repository is MT_GITHUB_REPOS as is; an empty list or an empty apiUrl (over values that set them) sets neither variable (an empty MT_GITHUB_API_URL would not parse)."""
    objs = render("dev", "eventStream.github.repos={Monkeytown/web}")
    assert _values(objs)["MT_GITHUB_REPOS"] == "Monkeytown/web"
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump({"eventStream": {"github": {"repos": ["acme"], "apiUrl": "https://ghe.example/api/v3"}}}))
    second.write_text(yaml.safe_dump({"eventStream": {"github": {"repos": [], "apiUrl": ""}}}))
    proc = helm("template", "monkeytown-dev", CHART, "-f", values_file("dev"), "-f", first, "-f", second, check=True)
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert not {"MT_GITHUB_REPOS", "MT_GITHUB_API_URL"} & set(_env(objs))


def test_large_numbers_from_a_values_file_stay_integers(tmp_path):
    """Seconds given in a values file (where YAML numbers are floats) reach the ConfigMap as plain integers, never 1e+06, which the hub would refuse."""
    path = tmp_path / "github.yaml"
    path.write_text(yaml.safe_dump({"eventStream": {"github": {"webhookSilenceSeconds": 1000000, "leaseSeconds": 3600}}}))
    proc = helm("template", "monkeytown-dev", CHART, "-f", values_file("dev"), "-f", path,
                "--show-only", "templates/configmap-event-stream.yaml", check=True)
    data = yaml.safe_load(proc.stdout)["data"]
    assert (data["MT_GITHUB_WEBHOOK_SILENCE_SECONDS"], data["MT_GITHUB_LEASE_SECONDS"]) == ("1000000", "3600")


# --- the webhook secret ------------------------------------------------------------------------


def test_webhook_secret_lives_in_the_secret_only():
    """secret.githubWebhookSecret is stored base64 under github-webhook-secret; MT_GITHUB_WEBHOOK_SECRET is a secretKeyRef to it (optional, like the other optional keys); its text (plain or base64) is in no ConfigMap and not in the Deployment; changing it rolls the pods (checksum/secret) only."""
    objs = render("dev", f"secret.githubWebhookSecret={GITHUB_WEBHOOK_SECRET}")
    assert _secret_data(objs, "monkeytown-dev")["github-webhook-secret"] == GITHUB_WEBHOOK_SECRET
    assert _env(objs)["MT_GITHUB_WEBHOOK_SECRET"] == {
        "name": "MT_GITHUB_WEBHOOK_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "monkeytown-dev", "key": "github-webhook-secret", "optional": True}},
    }
    encoded = base64.b64encode(GITHUB_WEBHOOK_SECRET.encode()).decode()
    for obj in find(objs, "ConfigMap") + find(objs, "Deployment"):
        text = yaml.safe_dump(obj)
        assert GITHUB_WEBHOOK_SECRET not in text and encoded not in text, f"{obj['kind']}/{obj['metadata']['name']}"
    before, after = _annotations(render("dev")), _annotations(objs)
    assert after["checksum/secret"] != before["checksum/secret"]
    assert after["checksum/config"] == before["checksum/config"]


def test_existing_secret_provides_the_webhook_secret():
    """With secret.existingSecret, MT_GITHUB_WEBHOOK_SECRET is an optional secretKeyRef to its key github-webhook-secret (a Secret without it leaves the webhook off), beside GITHUB_TOKEN's github-token; the chart renders no Secret."""
    objs = render("prod", "secret.existingSecret=monkeytown-creds")
    assert not find(objs, "Secret")
    env_vars = _env(objs, "prod")
    assert env_vars["MT_GITHUB_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "monkeytown-creds", "key": "github-webhook-secret", "optional": True}
    assert env_vars["GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "monkeytown-creds", "key": "github-token", "optional": True}


def test_everything_on_together():
    """With GITHUB_ON (test_chart.py's EVERYTHING_ON includes it, so kubernetes-validate checks it), the Secret holds the webhook secret and the container gets all five MT_GITHUB_* variables."""
    objs = render("staging", *GITHUB_ON)
    assert _secret_data(objs, "monkeytown-staging")["github-webhook-secret"] == GITHUB_WEBHOOK_SECRET
    value = _values(objs, "staging")
    assert value["MT_GITHUB_REPOS"] == "Monkeytown/web,acme"
    assert value["MT_GITHUB_API_URL"] == "https://github.example.com/api/v3"
    assert (value["MT_GITHUB_WEBHOOK_SILENCE_SECONDS"], value["MT_GITHUB_LEASE_SECONDS"]) == ("900", "15")
    assert _env(objs, "staging")["MT_GITHUB_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "github-webhook-secret"


# --- the Ingress path and the NetworkPolicy -----------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_turning_the_webhook_path_off_removes_only_that_path(env):
    """eventStream.github.webhook.ingress=false removes the path /github/webhook from the event-stream Ingress; every other object, and the rest of that Ingress, stays the same."""
    on, off = render(env), render(env, "eventStream.github.webhook.ingress=false")
    assert set(_paths(off, env)) == {"/ws"}
    name = f"monkeytown-{env}-event-stream"
    expected = one(on, "Ingress", name)
    for rule in expected["spec"]["rules"]:
        rule["http"]["paths"] = [p for p in rule["http"]["paths"] if p["path"] != WEBHOOK_PATH]
    assert one(off, "Ingress", name) == expected

    def others(objs):
        return [o for o in objs if (o["kind"], o["metadata"]["name"]) != ("Ingress", name)]

    if env == "dev":  # staging and prod generate a new Redis password on each render
        assert others(off) == others(on)
    else:
        assert [(o["kind"], o["metadata"]["name"]) for o in others(off)] == [(o["kind"], o["metadata"]["name"]) for o in others(on)]


def test_no_ingress_no_webhook_path():
    """ingress.enabled=false renders no Ingress at all, whatever eventStream.github.webhook.ingress says."""
    assert not find(render("dev", "ingress.enabled=false"), "Ingress")


def test_network_policy_treats_the_webhook_like_the_websocket():
    """The webhook path reaches the same named port (ws) as /ws, and the NetworkPolicy has one rule for that port: with wsFrom set to the ingress controller, the webhook (which arrives through it) is admitted exactly as WebSocket clients are; the admin port stays closed to it."""
    objs = render("prod", *NETWORK_POLICY_CUSTOM, *GITHUB_ON)
    paths = _paths(objs, "prod")
    assert paths[WEBHOOK_PATH]["backend"]["service"]["port"] == paths["/ws"]["backend"]["service"]["port"] == {"name": "ws"}
    policy = one(objs, "NetworkPolicy", "monkeytown-prod-event-stream")
    ws_rules = [r for r in policy["spec"]["ingress"] if {"port": "ws", "protocol": "TCP"} in r["ports"]]
    assert len(ws_rules) == 1
    assert ws_rules[0]["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_github_configurations_pass_kubernetes_validate_strict(version, tmp_path):
    """The GitHub configurations (everything on, existingSecret, the webhook path off) pass kubernetes-validate --strict for Kubernetes 1.27 and the newest version it ships."""
    if version == "latest":
        version = _latest_kubernetes()
    configs = [
        ("prod", GITHUB_ON),
        ("prod", ("secret.existingSecret=monkeytown-creds", "eventStream.github.repos={acme}")),
        ("dev", ("eventStream.github.webhook.ingress=false",)),
    ]
    validate_configs(tmp_path, version, configs)


# --- refusals ----------------------------------------------------------------------------------


SHORT_WEBHOOK_SECRET = "fifteen-bytes.."
assert len(SHORT_WEBHOOK_SECRET) == 15

# Values the chart refuses: (--set arguments, text of the schema's error, text of the chart's own
# error with --skip-schema-validation).
BAD_GITHUB_VALUES = {
    "repository with two slashes": (
        ["eventStream.github.repos={a/b/c}"], "/eventStream/github/repos/0", '"a/b/c" is not owner/repo or an organisation name'),
    "repository with a space": (
        ["eventStream.github.repos={Monkeytown/my web}"], "/eventStream/github/repos/0", "is not owner/repo"),
    "repos as a string": (
        ["eventStream.github.repos=Monkeytown/web"], "/eventStream/github/repos", "eventStream.github.repos must be a list"),
    "lease of 2 seconds": (
        ["eventStream.github.leaseSeconds=2"], "/eventStream/github/leaseSeconds", "eventStream.github.leaseSeconds must be at least 3 (got 2)"),
    "silence of 0 seconds": (
        ["eventStream.github.webhookSilenceSeconds=0"], "/eventStream/github/webhookSilenceSeconds",
        "eventStream.github.webhookSilenceSeconds must be at least 1"),
    "API URL without scheme": (
        ["eventStream.github.apiUrl=api.github.com"], "/eventStream/github/apiUrl", "expected an http:// or https:// URL"),
    "webhook secret of 15 bytes": (
        [f"secret.githubWebhookSecret={SHORT_WEBHOOK_SECRET}"], "/secret/githubWebhookSecret",
        "secret.githubWebhookSecret must be at least 16 bytes (got 15)"),
}


@pytest.mark.parametrize("case", sorted(BAD_GITHUB_VALUES))
def test_schema_and_chart_refuse_bad_github_values(case):
    """A bad repository entry (a/b/c), a list given as a string, a lease under 3 seconds, a zero silence, an API URL without http(s):// or a webhook secret under 16 bytes fails helm template and helm lint through values.schema.json, naming the value; the chart's own check refuses it too with schema validation skipped. The webhook secret is never echoed."""
    sets, schema_text, chart_text = BAD_GITHUB_VALUES[case]
    proc = _template(*sets)
    assert proc.returncode != 0, f"helm template accepted {sets}"
    assert "schema" in proc.stderr and schema_text in proc.stderr, proc.stderr
    lint = helm("lint", "--strict", CHART, "-f", values_file("dev"), *[a for s in sets for a in ("--set", s)])
    assert lint.returncode != 0 and schema_text in lint.stdout + lint.stderr
    skipped = _template(*sets, skip_schema=True)
    assert skipped.returncode != 0 and chart_text in skipped.stderr, skipped.stderr
    assert "execution error at (monkeytown/templates/" in skipped.stderr
    for out in (proc, lint, skipped):
        assert SHORT_WEBHOOK_SECRET not in out.stdout + out.stderr


def test_webhook_secret_beside_existing_secret_is_refused():
    """secret.githubWebhookSecret set beside secret.existingSecret (ignored: the chart renders no Secret, so the webhook would stay off) fails helm template, saying where to put it, without echoing it."""
    proc = _template("secret.existingSecret=creds", f"secret.githubWebhookSecret={GITHUB_WEBHOOK_SECRET}")
    assert proc.returncode != 0
    assert "put the webhook secret in Secret creds under the key github-webhook-secret" in proc.stderr, proc.stderr
    assert GITHUB_WEBHOOK_SECRET not in proc.stdout + proc.stderr


def test_boundaries_are_accepted():
    """The checks' boundaries render: a webhook secret of 16 bytes, a lease of 3 seconds, a silence of 1 second, an http:// API URL, names with dots, dashes and underscores."""
    objs = render("dev", "secret.githubWebhookSecret=" + "s" * 16, "eventStream.github.leaseSeconds=3",
                  "eventStream.github.webhookSilenceSeconds=1", "eventStream.github.apiUrl=http://ghe.internal/api/v3",
                  "eventStream.github.repos={my-org.io/web_app.js,a_b-c.d}")
    value = _values(objs)
    assert (value["MT_GITHUB_LEASE_SECONDS"], value["MT_GITHUB_WEBHOOK_SILENCE_SECONDS"]) == ("3", "1")
    assert value["MT_GITHUB_REPOS"] == "my-org.io/web_app.js,a_b-c.d"
    assert value["MT_GITHUB_API_URL"] == "http://ghe.internal/api/v3"


# --- notes and documentation --------------------------------------------------------------------


def test_notes_give_the_payload_url_not_the_secret():
    """With the webhook and polling on, helm install's notes give the webhook's payload URL and where its secret comes from (never the secret), the polled targets, and warn that polling without a token is unauthenticated."""
    proc = helm("install", "monkeytown-prod", CHART, "--dry-run=client", "-n", "monkeytown-prod",
                "-f", values_file("prod"), *[a for s in GITHUB_ON for a in ("--set", s)], check=True)
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "Webhook payload URL: https://monkeytown.dev/github/webhook" in notes
    assert "key github-webhook-secret of Secret monkeytown-prod" in notes
    assert "Polling Monkeytown/web, acme through https://github.example.com/api/v3" in notes
    assert "secret.githubToken is empty" in notes
    assert GITHUB_WEBHOOK_SECRET not in notes
    default = helm("install", "monkeytown-dev", CHART, "--dry-run=client", "-f", values_file("dev"), check=True)
    assert "GitHub source" not in default.stdout.split("NOTES:", 1)[1]


GITHUB_VALUE_VARIABLES = {
    "eventStream.github.repos": "MT_GITHUB_REPOS",
    "eventStream.github.apiUrl": "MT_GITHUB_API_URL",
    "eventStream.github.webhookSilenceSeconds": "MT_GITHUB_WEBHOOK_SILENCE_SECONDS",
    "eventStream.github.leaseSeconds": "MT_GITHUB_LEASE_SECONDS",
    "secret.githubWebhookSecret": "MT_GITHUB_WEBHOOK_SECRET",
}


@pytest.mark.parametrize("value,variable", sorted(GITHUB_VALUE_VARIABLES.items()))
def test_each_github_value_names_its_variable(value, variable):
    """Each GitHub value's schema description names its variable in backticks, values.yaml's comment on it names the variable, and docs/chart.md names the value and the variable."""
    assert f"`{variable}`" in schema_node(value)["description"]
    assert variable in values_comment(value), f"values.yaml's comment on {value} does not name {variable}"
    existing = schema_node("secret.existingSecret")["description"]
    assert "github-webhook-secret (`MT_GITHUB_WEBHOOK_SECRET`)" in existing
    doc = CHART_DOC.read_text()
    assert f"`{value}`" in doc and f"`{variable}`" in doc


def test_docs_section():
    """docs/chart.md has a section "GitHub source" naming every eventStream.github value, the Secret key github-webhook-secret and the path /github/webhook, and linking docs/github.md."""
    doc = CHART_DOC.read_text()
    assert "\n## GitHub source\n" in doc
    section = doc.split("\n## GitHub source\n", 1)[1].split("\n## ", 1)[0]
    for text in ("`eventStream.github.repos`", "`eventStream.github.apiUrl`", "`eventStream.github.webhookSilenceSeconds`",
                 "`eventStream.github.leaseSeconds`", "`eventStream.github.webhook.ingress`",
                 "`secret.githubWebhookSecret`", "`github-webhook-secret`", "`/github/webhook`", "(github.md"):
        assert text in section, text
