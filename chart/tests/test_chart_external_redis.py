"""Tests of the chart's external Redis (docs/chart.md, "External Redis: standalone, Sentinel,
Cluster, TLS"): with redis.enabled=false, externalRedis gives the event stream REDIS_URL (one
server, Sentinels or a Cluster, each with or without TLS), REDIS_USERNAME, REDIS_PASSWORD from a
Secret the operator manages, and MT_REDIS_CA_FILE, the file of a CA Secret mounted read-only.

A password never appears in the pod spec or a ConfigMap: REDIS_PASSWORD is a secretKeyRef. Bad
values fail the render with a message (the schema's pattern for the URL's scheme, the chart's own
checks for a CA without TLS and a Sentinel URL without its primary's name). Every configuration
here passes kubernetes-validate --strict. Rendered manifests are parsed, never grepped.

Run: bash scripts/install-test-tools.sh && .tools/venv/bin/pytest chart/tests
"""

from __future__ import annotations

import json
import posixpath
import re

import pytest
import yaml

from test_chart import (
    AUTH_ON,
    CHART,
    OLDEST_KUBERNETES,
    REPO,
    container,
    env_map,
    event_stream,
    find,
    helm,
    _latest_kubernetes,
    one,
    pod_spec,
    render,
    run,
    _schema_descriptions,
    set_literal,
    validate_configs,
    values_file,
)

CHART_DOC = REPO / "docs" / "chart.md"
CA_MOUNT = "/etc/mt-stream/redis-ca"

# One URL per layout the hub accepts (crates/hub/src/source/redis/target.rs), as an operator
# would write it: no credentials.
URLS = {
    "standalone": "redis://redis.example:6379/0",
    "standalone-tls": "rediss://redis.example:6380/0",
    "sentinel": "redis-sentinel://sentinel-0.example:26379?node=sentinel-1.example:26379&node=sentinel-2.example:26379&sentinelServiceName=mymaster",
    "sentinel-tls": "rediss-sentinel://sentinel-0.example:26379?node=sentinel-1.example:26379&sentinelServiceName=mymaster",
    "cluster": "redis-cluster://redis-0.example:6379?node=redis-1.example:6379&node=redis-2.example:6379",
    "cluster-tls": "rediss-cluster://redis-0.example:6379?node=redis-1.example:6379&node=redis-2.example:6379",
}
TLS_LAYOUTS = sorted(k for k in URLS if k.endswith("-tls"))
PLAIN_LAYOUTS = sorted(k for k in URLS if not k.endswith("-tls"))

PASSWORD_SECRET = ("externalRedis.password.existingSecret=redis-auth",)
CA_SECRET = ("externalRedis.tls.caSecret=redis-ca",)


def external(layout: str, *sets: str) -> tuple[str, ...]:
    """--set values for redis.enabled=false and URLS[layout], plus sets."""
    return ("redis.enabled=false", f"externalRedis.url={set_literal(URLS[layout])}") + sets


# Every branch of externalRedis at once: each layout with user, password and (over TLS) the CA.
FULL = {
    layout: external(layout, "externalRedis.username=mt-stream", *PASSWORD_SECRET,
                     *(CA_SECRET if layout.endswith("-tls") else ()))
    for layout in URLS
}


def _env(objs: list[dict], env: str = "dev") -> dict[str, dict]:
    return env_map(objs, event_stream(objs, env), "event-stream")


def _ca_volume(deployment: dict) -> tuple[dict, dict] | None:
    """(volume, mount) of the volume mounted at CA_MOUNT, or None."""
    mounts = [m for m in container(deployment, "event-stream").get("volumeMounts", []) if m["mountPath"] == CA_MOUNT]
    if not mounts:
        return None
    assert len(mounts) == 1
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mounts[0]["name"])
    return volume, mounts[0]


def _template(*args: str, env: str = "dev") -> tuple[int, str]:
    """helm template with the env's values file and args; (exit code, stdout + stderr)."""
    proc = helm("template", f"monkeytown-{env}", CHART, "-f", values_file(env), *args)
    return proc.returncode, proc.stdout + proc.stderr


def _set_args(sets: tuple[str, ...]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


# --- REDIS_URL per layout ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(URLS))
def test_each_layout_url_becomes_redis_url(layout):
    """externalRedis.url of each layout (standalone, Sentinel, Cluster; plain and TLS) is REDIS_URL verbatim, a literal in the Deployment (not the ConfigMap); no credential or CA variable is set unless asked for, and no in-chart Redis object is rendered."""
    objs = render("dev", *external(layout))
    env_vars = _env(objs)
    assert env_vars["REDIS_URL"] == {"name": "REDIS_URL", "value": URLS[layout]}
    assert not {"REDIS_USERNAME", "REDIS_PASSWORD", "MT_REDIS_CA_FILE"} & set(env_vars)
    assert not [k for k in one(objs, "ConfigMap", "monkeytown-dev-event-stream")["data"] if k.startswith("REDIS")]
    assert _ca_volume(event_stream(objs)) is None
    assert [v["name"] for v in pod_spec(event_stream(objs))["volumes"]] == ["tmp"]
    assert not [o for o in objs if o["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_redis_disabled_renders_no_in_chart_redis(env):
    """redis.enabled=false renders no Redis Deployment, Service or PVC, and the chart's Secret holds no redis-password, even where the environment turns redis.auth on."""
    objs = render(env, *FULL["sentinel-tls"])
    fullname = f"monkeytown-{env}"
    assert not find(objs, "Deployment", f"{fullname}-redis")
    assert not find(objs, "Service", f"{fullname}-redis")
    assert not find(objs, "PersistentVolumeClaim")
    assert "redis-password" not in one(objs, "Secret", fullname)["data"]
    kept = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Deployment", f"{fullname}-event-stream") in kept and ("Service", f"{fullname}-event-stream") in kept


def test_external_redis_values_are_ignored_while_the_in_chart_redis_runs():
    """With redis.enabled true, externalRedis (URL, user, password, CA) changes nothing: REDIS_URL points at the in-chart Service and nothing is mounted."""
    plain = render("dev")
    with_external = render("dev", *FULL["cluster-tls"][1:])
    assert [o for o in with_external if o["kind"] != "Secret"] == [o for o in plain if o["kind"] != "Secret"]
    env_vars = _env(with_external)
    assert env_vars["REDIS_URL"]["value"] == "redis://monkeytown-dev-redis:6379"
    assert not {"REDIS_USERNAME", "MT_REDIS_CA_FILE"} & set(env_vars)


# --- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", PLAIN_LAYOUTS)
def test_password_comes_from_the_existing_secret(layout):
    """externalRedis.password.existingSecret becomes REDIS_PASSWORD, a secretKeyRef to that Secret (key redis-password by default, or password.key), set before REDIS_URL; the URL stays without credentials."""
    objs = render("dev", *external(layout, *PASSWORD_SECRET))
    c = container(event_stream(objs), "event-stream")
    names = [e["name"] for e in c["env"]]
    password = c["env"][names.index("REDIS_PASSWORD")]
    assert password == {"name": "REDIS_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "redis-password"}}}
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
    assert c["env"][names.index("REDIS_URL")]["value"] == URLS[layout]

    objs = render("dev", *external(layout, *PASSWORD_SECRET, "externalRedis.password.key=password"))
    assert _env(objs)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "password"}


@pytest.mark.parametrize("layout", sorted(URLS))
def test_no_password_in_a_config_map_or_an_env_literal(layout):
    """With a password from a Secret, every *PASSWORD* variable is a secretKeyRef (never a value), and no literal env value or ConfigMap entry holds URL credentials (user:password@) or a sentinelPassword."""
    objs = render("prod", *FULL[layout])
    literals: list[str] = []
    for d in find(objs, "Deployment"):
        for c in pod_spec(d).get("initContainers", []) + pod_spec(d)["containers"]:
            for e in c.get("env", []):
                if "PASSWORD" in e["name"]:
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
                elif "value" in e:
                    literals.append(e["value"])
    for cm in find(objs, "ConfigMap"):
        assert not [k for k in cm["data"] if "PASSWORD" in k or k.startswith("REDIS")], cm["metadata"]["name"]
        literals += [str(v) for v in cm["data"].values()]
    credentials = re.compile(r"://[^/?#@]*:[^/?#@]*@")
    assert not [v for v in literals if credentials.search(v) or "sentinelPassword" in v]
    # The only REDIS_PASSWORD is the operator's Secret; the chart stores no Redis password.
    assert _env(objs, "prod")["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    assert "redis-password" not in one(objs, "Secret", "monkeytown-prod")["data"]


def test_username_becomes_redis_username():
    """externalRedis.username becomes REDIS_USERNAME, a literal in the Deployment, set before REDIS_URL; unset by default."""
    objs = render("dev", *external("standalone", "externalRedis.username=mt-stream", *PASSWORD_SECRET))
    c = container(event_stream(objs), "event-stream")
    names = [e["name"] for e in c["env"]]
    assert c["env"][names.index("REDIS_USERNAME")] == {"name": "REDIS_USERNAME", "value": "mt-stream"}
    assert names.index("REDIS_USERNAME") < names.index("REDIS_URL")
    assert "REDIS_USERNAME" not in _env(render("dev", *external("standalone")))


def test_url_secret_and_password_secret_together():
    """externalRedis.existingSecret (the whole URL) and password.existingSecret combine: both are secretKeyRefs (the hub uses REDIS_PASSWORD only when the URL holds none)."""
    objs = render("dev", "redis.enabled=false", "externalRedis.existingSecret=redis-creds", *PASSWORD_SECRET,
                  "externalRedis.username=mt-stream")
    env_vars = _env(objs)
    assert env_vars["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-creds", "key": "redis-url"}
    assert env_vars["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "redis-password"}
    assert env_vars["REDIS_USERNAME"]["value"] == "mt-stream"


# --- TLS ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", TLS_LAYOUTS)
def test_ca_secret_is_mounted_and_named_by_mt_redis_ca_file(layout):
    """externalRedis.tls.caSecret is mounted read-only as a directory (no subPath) from that Secret's key ca.crt, and MT_REDIS_CA_FILE is the file's path inside the mount."""
    objs = render("dev", *external(layout, *CA_SECRET))
    d = event_stream(objs)
    found = _ca_volume(d)
    assert found is not None, "no volume mounted at " + CA_MOUNT
    volume, mount = found
    assert mount["readOnly"] is True
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert volume["secret"]["secretName"] == "redis-ca"
    items = volume["secret"]["items"]
    assert [i["key"] for i in items] == ["ca.crt"]
    ca_file = _env(objs)["MT_REDIS_CA_FILE"]["value"]
    assert posixpath.dirname(ca_file) == mount["mountPath"]
    assert posixpath.basename(ca_file) == items[0]["path"]
    assert _env(objs)["REDIS_URL"]["value"] == URLS[layout]


def test_ca_key_picks_the_secret_key():
    """externalRedis.tls.caKey names the key of tls.caSecret that is mounted; the file MT_REDIS_CA_FILE names stays the same."""
    objs = render("dev", *external("standalone-tls", *CA_SECRET, "externalRedis.tls.caKey=tls.ca"))
    volume, _ = _ca_volume(event_stream(objs))
    assert volume["secret"]["items"] == [{"key": "tls.ca", "path": "ca.crt"}]
    assert _env(objs)["MT_REDIS_CA_FILE"]["value"] == f"{CA_MOUNT}/ca.crt"


def test_ca_and_auth_keys_mount_side_by_side():
    """The Redis CA and the token JWKS are two volumes with their own mount paths."""
    objs = render("dev", *external("cluster-tls", *CA_SECRET), *AUTH_ON)
    d = event_stream(objs)
    mounts = {m["name"]: m["mountPath"] for m in container(d, "event-stream")["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "auth-keys": "/etc/mt-stream/auth", "redis-ca": CA_MOUNT}
    env_vars = _env(objs)
    assert env_vars["MT_REDIS_CA_FILE"]["value"].startswith(CA_MOUNT + "/")
    assert env_vars["MT_AUTH_PUBLIC_KEYS_FILE"]["value"].startswith("/etc/mt-stream/auth/")


@pytest.mark.parametrize("layout", PLAIN_LAYOUTS)
@pytest.mark.parametrize("schema", ["validated", "skipped"])
def test_ca_secret_without_a_tls_url_fails(layout, schema):
    """tls.caSecret with a redis://, redis-cluster:// or redis-sentinel:// URL fails the render with a message naming the value and the TLS schemes (schema validation on or skipped)."""
    extra = ["--skip-schema-validation"] if schema == "skipped" else []
    code, output = _template(*_set_args(external(layout, *CA_SECRET)), *extra)
    assert code != 0
    scheme = URLS[layout].split("://")[0]
    assert (f"externalRedis.tls.caSecret (redis-ca) needs a TLS externalRedis.url: rediss://, rediss-cluster:// "
            f"or rediss-sentinel://, not {scheme}://") in output, output
    assert URLS[layout] not in output


# --- bad URLs ------------------------------------------------------------------------------------------


BAD_URLS = ["http://x", "https://redis.example:6379", "unix:///run/redis.sock", "redis-sentinal://s:26379",
            "redis+tls://r:6379", "redis.example:6379"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_schema_rejects_a_url_of_another_scheme(url):
    """An externalRedis.url with another scheme fails helm lint and helm template through values.schema.json, naming externalRedis.url; with schema validation skipped, the chart's own check refuses it."""
    sets = ("redis.enabled=false", f"externalRedis.url={set_literal(url)}")
    lint = helm("lint", "--strict", CHART, "-f", values_file("dev"), *_set_args(sets))
    assert lint.returncode != 0
    assert "externalRedis/url" in lint.stdout + lint.stderr
    code, output = _template(*_set_args(sets))
    assert code != 0 and "externalRedis/url" in output and "does not match pattern" in output, output
    code, output = _template(*_set_args(sets), "--skip-schema-validation")
    assert code != 0
    assert "externalRedis.url: expected a redis://, rediss://, redis-cluster://, rediss-cluster://, redis-sentinel:// or rediss-sentinel:// URL" in output


def test_schema_pattern_accepts_exactly_the_hubs_schemes():
    """The schema's pattern for externalRedis.url accepts the six schemes the hub knows (and empty), nothing else."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    pattern = re.compile(schema["properties"]["externalRedis"]["properties"]["url"]["pattern"])
    for url in list(URLS.values()) + [""]:
        assert pattern.search(url), url
    for url in BAD_URLS + ["redis://", "redis-cluster-tls://h:1", "rediss-sentinels://h:1"]:
        assert not pattern.search(url), url


@pytest.mark.parametrize("scheme", ["redis-sentinel", "rediss-sentinel"])
def test_sentinel_url_without_service_name_fails(scheme):
    """A Sentinel URL without sentinelServiceName fails the render (the hub would refuse it at start-up), without echoing the URL."""
    url = f"{scheme}://sentinel-0.example:26379?node=sentinel-1.example:26379"
    code, output = _template("--set", "redis.enabled=false", "--set", f"externalRedis.url={set_literal(url)}")
    assert code != 0
    assert "externalRedis.url: a redis-sentinel:// or rediss-sentinel:// URL needs ?sentinelServiceName=<the primary's name>" in output
    assert url not in output


def test_bad_secret_keys_are_rejected_by_the_schema():
    """password.key and tls.caKey must be Secret key names (the schema's pattern), and unknown keys under externalRedis are refused."""
    for bad in ("externalRedis.password.key=", "externalRedis.tls.caKey=ca/crt", "externalRedis.tls.ca=x",
                "externalRedis.password.value=hunter2"):
        code, output = _template("--set", "redis.enabled=false", "--set", "externalRedis.url=redis://r:6379", "--set", bad)
        assert code != 0, bad
        assert "externalRedis" in output, output


# --- the whole release ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(URLS))
def test_helm_lint_strict_passes(layout):
    """helm lint --strict passes for each layout with user, password and (over TLS) the CA."""
    proc = helm("lint", "--strict", CHART, "-f", values_file("prod"), *_set_args(FULL[layout]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_manifests_pass_kubernetes_validate_strict(version, tmp_path):
    """Every manifest of every externalRedis configuration here passes kubernetes-validate --strict for Kubernetes 1.27 and the newest version it ships."""
    if version == "latest":
        version = _latest_kubernetes()
    configs = [("dev", external(layout)) for layout in sorted(URLS)] + [("prod", FULL[layout]) for layout in sorted(URLS)]
    configs += [("staging", ("redis.enabled=false", "externalRedis.existingSecret=redis-creds", *PASSWORD_SECRET,
                             *CA_SECRET, *AUTH_ON))]
    validate_configs(tmp_path, version, configs)


def test_notes_name_the_secrets_not_their_contents():
    """helm install's notes say where the external Redis' password and CA come from (Secret and key names only)."""
    proc = helm("install", "monkeytown-prod", CHART, "--dry-run=client", "-f", values_file("prod"),
                *_set_args(FULL["standalone-tls"]), check=True)
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"Redis: external ({URLS['standalone-tls']}, user mt-stream, password from Secret redis-auth key redis-password, CA from Secret redis-ca key ca.crt)." in notes


# --- documentation -----------------------------------------------------------------------------------------


def test_new_variables_are_named_in_the_schema():
    """REDIS_USERNAME, REDIS_PASSWORD and MT_REDIS_CA_FILE, which the container gets with externalRedis, are named in backticks in values.schema.json's descriptions."""
    descriptions = " ".join(_schema_descriptions(json.loads((CHART / "values.schema.json").read_text())))
    named = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", descriptions))
    seen = {n for n in _env(render("prod", *FULL["sentinel-tls"]), "prod") if re.match(r"^(MT|REDIS|GITHUB)_", n)}
    assert {"REDIS_URL", "REDIS_USERNAME", "REDIS_PASSWORD", "MT_REDIS_CA_FILE"} <= seen
    assert not sorted(seen - named)


def _leaves(node: dict, prefix: str) -> list[str]:
    out = []
    for key, value in node.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


def test_every_external_redis_value_is_in_the_docs(tmp_path):
    """Every externalRedis value (with its default in values.yaml) is named in docs/chart.md, which shows one values snippet per layout that renders."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["externalRedis"] == {
        "url": "", "existingSecret": "", "existingSecretUrlKey": "redis-url", "username": "",
        "password": {"existingSecret": "", "key": "redis-password"},
        "tls": {"caSecret": "", "caKey": "ca.crt"},
    }
    doc = CHART_DOC.read_text()
    missing = [leaf for leaf in _leaves(values["externalRedis"], "externalRedis.") if f"`{leaf}`" not in doc]
    assert not missing, f"not in {CHART_DOC}: {missing}"
    section = doc.split("## External Redis: standalone, Sentinel, Cluster, TLS", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```yaml\n(.*?)```", section, re.S)
    schemes = set()
    for i, snippet in enumerate(snippets):
        url = yaml.safe_load(snippet)["externalRedis"]["url"]
        schemes.add(url.split("://")[0])
        path = tmp_path / f"snippet-{i}.yaml"
        path.write_text(snippet)
        proc = helm("template", "monkeytown-prod", CHART, "-f", values_file("prod"), "-f", path)
        assert proc.returncode == 0, snippet + proc.stderr
        env_vars = _env([d for d in yaml.safe_load_all(proc.stdout) if d], "prod")
        assert env_vars["REDIS_URL"]["value"] == url
    assert {"redis", "redis-sentinel", "redis-cluster"} <= {s.replace("rediss", "redis") for s in schemes}
    assert any(s.startswith("rediss") for s in schemes)
