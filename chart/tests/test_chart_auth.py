"""Tests of the chart's token settings ("channel grants"): MT_PUBLIC_CHANNELS, MT_AUTH_HMAC_SECRET,
MT_AUTH_PUBLIC_KEYS_FILE, MT_AUTH_AUDIENCE and MT_AUTH_KEYS_RELOAD_SECONDS (docs/chart.md,
"Tokens and private channels"; every setting: docs/configuration.md).

The keys are secrets: they live in the Secret (the chart's, or secret.existingSecret), reach the
container through a secretKeyRef (the HMAC secret) or a mounted Secret volume (the JWKS), and
never appear in a ConfigMap or in the Deployment. Rendered manifests are parsed, never grepped.

Run: bash scripts/install-test-tools.sh && .tools/venv/bin/pytest chart/tests
"""

from __future__ import annotations

import base64
import json
import posixpath

import pytest
import yaml

from test_chart import (
    AUTH_HMAC_SECRET,
    AUTH_JWKS,
    AUTH_ON,
    CHART,
    ENVS,
    REPO,
    container,
    env_map,
    event_stream,
    find,
    helm,
    one,
    pod_spec,
    render,
    schema_node,
    set_literal,
    values_comment,
    values_file,
)

CONFIGURATION = REPO / "docs" / "configuration.md"
KEYS_MOUNT = "/etc/mt-stream/auth"
KEYS_FILE = f"{KEYS_MOUNT}/public-keys.jwks"


def _secret_data(objs: list[dict], name: str) -> dict[str, str]:
    """The Secret's data, base64-decoded."""
    return {k: base64.b64decode(v).decode() for k, v in one(objs, "Secret", name)["data"].items()}


def _auth_volume(deployment: dict) -> tuple[dict, dict] | None:
    """(volume, mount) of the volume mounted at KEYS_MOUNT, or None."""
    mounts = [m for m in container(deployment, "event-stream").get("volumeMounts", []) if m["mountPath"] == KEYS_MOUNT]
    if not mounts:
        return None
    assert len(mounts) == 1
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mounts[0]["name"])
    return volume, mounts[0]


def _documented_default(flag: str) -> str:
    """The default column of `flag`'s row in docs/configuration.md's `serve` table, without backticks."""
    for line in CONFIGURATION.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0] == f"`{flag}`":
            return cells[2].strip("`")
    raise AssertionError(f"{flag} is not in {CONFIGURATION}")


@pytest.mark.parametrize("env", ENVS)
def test_by_default_no_key_reaches_the_hub(env):
    """By default the container gets no MT_AUTH_HMAC_SECRET and no MT_AUTH_PUBLIC_KEYS_FILE (so every channel is public), MT_PUBLIC_CHANNELS empty and the binary's documented audience and reload interval; the Secret holds no auth key and nothing is mounted."""
    objs = render(env)
    d = event_stream(objs, env)
    env_vars = env_map(objs, d, "event-stream")
    assert "MT_AUTH_HMAC_SECRET" not in env_vars
    assert "MT_AUTH_PUBLIC_KEYS_FILE" not in env_vars
    value = {k: v.get("value") for k, v in env_vars.items()}
    assert value["MT_PUBLIC_CHANNELS"] == ""
    assert value["MT_AUTH_AUDIENCE"] == _documented_default("--auth-audience") == "mt-stream"
    assert value["MT_AUTH_KEYS_RELOAD_SECONDS"] == _documented_default("--auth-keys-reload-seconds") == "30"
    assert _documented_default("--public-channels").startswith("empty")
    assert not {"auth-hmac-secret", "auth-public-keys.jwks"} & set(one(objs, "Secret", f"monkeytown-{env}")["data"])
    assert _auth_volume(d) is None
    assert [v["name"] for v in pod_spec(d)["volumes"]] == ["tmp"]


def test_public_channels_audience_and_reload_reach_the_config_map():
    """publicChannels is joined with commas into the ConfigMap's MT_PUBLIC_CHANNELS; audience and keysReloadSeconds become MT_AUTH_AUDIENCE and MT_AUTH_KEYS_RELOAD_SECONDS; changing them rolls the pods through checksum/config only."""
    sets = ("eventStream.auth.publicChannels={builds,town:*,*}", "eventStream.auth.audience=monkeytown",
            "eventStream.auth.keysReloadSeconds=10")
    objs = render("dev", *sets)
    data = one(objs, "ConfigMap", "monkeytown-dev-event-stream")["data"]
    assert data["MT_PUBLIC_CHANNELS"] == "builds,town:*,*"
    assert data["MT_AUTH_AUDIENCE"] == "monkeytown"
    assert data["MT_AUTH_KEYS_RELOAD_SECONDS"] == "10"
    assert env_map(objs, event_stream(objs), "event-stream")["MT_PUBLIC_CHANNELS"]["from"] == "configMap"
    # dev: no generated Redis password, so the Secret renders the same every time.
    before = event_stream(render("dev"))["spec"]["template"]["metadata"]["annotations"]
    after = event_stream(objs)["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before["checksum/config"]
    assert after["checksum/secret"] == before["checksum/secret"]


def test_hmac_secret_lives_in_the_secret_only():
    """secret.authHmacSecret is stored base64 under auth-hmac-secret; MT_AUTH_HMAC_SECRET is a secretKeyRef to it; the secret's text (plain or base64) is in no ConfigMap and not in the Deployment; changing it rolls the pods (checksum/secret)."""
    objs = render("dev", f"secret.authHmacSecret={AUTH_HMAC_SECRET}")
    assert _secret_data(objs, "monkeytown-dev")["auth-hmac-secret"] == AUTH_HMAC_SECRET
    d = event_stream(objs)
    env_vars = env_map(objs, d, "event-stream")
    assert env_vars["MT_AUTH_HMAC_SECRET"] == {
        "name": "MT_AUTH_HMAC_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "monkeytown-dev", "key": "auth-hmac-secret", "optional": True}},
    }
    assert "MT_AUTH_PUBLIC_KEYS_FILE" not in env_vars and _auth_volume(d) is None
    encoded = base64.b64encode(AUTH_HMAC_SECRET.encode()).decode()
    for obj in find(objs, "ConfigMap") + find(objs, "Deployment"):
        text = yaml.safe_dump(obj)
        assert AUTH_HMAC_SECRET not in text and encoded not in text, f"{obj['kind']}/{obj['metadata']['name']}"
    # dev: no generated Redis password, so only the HMAC secret moves checksum/secret.
    before = event_stream(render("dev"))["spec"]["template"]["metadata"]["annotations"]
    assert d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] != before["checksum/secret"]
    assert d["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == before["checksum/config"]


def test_public_keys_jwks_is_mounted_as_a_file_without_sub_path():
    """secret.authPublicKeysJwks is stored under auth-public-keys.jwks and mounted read-only, that key only, as a directory (no subPath, so the kubelet updates the file when the Secret changes); MT_AUTH_PUBLIC_KEYS_FILE is the file's path."""
    objs = render("dev", f"secret.authPublicKeysJwks={set_literal(AUTH_JWKS)}")
    assert _secret_data(objs, "monkeytown-dev")["auth-public-keys.jwks"] == AUTH_JWKS
    d = event_stream(objs)
    env_vars = env_map(objs, d, "event-stream")
    assert env_vars["MT_AUTH_PUBLIC_KEYS_FILE"] == {"name": "MT_AUTH_PUBLIC_KEYS_FILE", "value": KEYS_FILE}
    assert "MT_AUTH_HMAC_SECRET" not in env_vars
    volume, mount = _auth_volume(d)
    assert mount["readOnly"] is True
    assert all("subPath" not in m and "subPathExpr" not in m for m in container(d, "event-stream")["volumeMounts"])
    assert volume["secret"] == {
        "secretName": "monkeytown-dev",
        "items": [{"key": "auth-public-keys.jwks", "path": posixpath.basename(KEYS_FILE)}],
    }
    assert posixpath.join(mount["mountPath"], volume["secret"]["items"][0]["path"]) == env_vars["MT_AUTH_PUBLIC_KEYS_FILE"]["value"]
    for obj in find(objs, "ConfigMap") + find(objs, "Deployment"):
        assert "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" not in yaml.safe_dump(obj)
    # checksum/secret covers the whole Secret, so a JWKS changed through helm rolls the pods too
    # (harmless: the hub would have re-read the file anyway); one edited outside helm does not.
    before = event_stream(render("dev"))["spec"]["template"]["metadata"]["annotations"]
    assert d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] != before["checksum/secret"]


def test_both_keys_together():
    """With both keys and public channels, the Secret holds both keys, the env has both variables, and the ConfigMap lists the channels (test_chart.py's EVERYTHING_ON includes this configuration, so kubernetes-validate checks it)."""
    objs = render("staging", *AUTH_ON)
    data = _secret_data(objs, "monkeytown-staging")
    assert (data["auth-hmac-secret"], json.loads(data["auth-public-keys.jwks"])) == (AUTH_HMAC_SECRET, json.loads(AUTH_JWKS))
    env_vars = env_map(objs, event_stream(objs, "staging"), "event-stream")
    assert env_vars["MT_AUTH_HMAC_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "auth-hmac-secret"
    assert env_vars["MT_AUTH_PUBLIC_KEYS_FILE"]["value"] == KEYS_FILE
    assert env_vars["MT_PUBLIC_CHANNELS"]["value"] == "builds,town:*"


def test_existing_secret_provides_the_keys():
    """With secret.existingSecret, MT_AUTH_HMAC_SECRET is an optional secretKeyRef to its auth-hmac-secret and nothing is mounted; publicKeysFromExistingSecret mounts its auth-public-keys.jwks (no subPath) and sets MT_AUTH_PUBLIC_KEYS_FILE."""
    objs = render("prod", "secret.existingSecret=monkeytown-creds")
    assert not find(objs, "Secret")
    d = event_stream(objs, "prod")
    env_vars = env_map(objs, d, "event-stream")
    assert env_vars["MT_AUTH_HMAC_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "monkeytown-creds", "key": "auth-hmac-secret", "optional": True}
    assert "MT_AUTH_PUBLIC_KEYS_FILE" not in env_vars and _auth_volume(d) is None

    objs = render("prod", "secret.existingSecret=monkeytown-creds", "eventStream.auth.publicKeysFromExistingSecret=true")
    d = event_stream(objs, "prod")
    assert env_map(objs, d, "event-stream")["MT_AUTH_PUBLIC_KEYS_FILE"]["value"] == KEYS_FILE
    volume, mount = _auth_volume(d)
    assert "subPath" not in mount and mount["readOnly"] is True
    assert volume["secret"] == {"secretName": "monkeytown-creds",
                                "items": [{"key": "auth-public-keys.jwks", "path": "public-keys.jwks"}]}


SHORT_HMAC_SECRET = "short-hmac-secret-of-31-bytes.."
assert len(SHORT_HMAC_SECRET) == 31

# Values the chart refuses: (--set arguments, text of the schema's error, text of the chart's own
# error with --skip-schema-validation, or None when only the schema checks it).
BAD_AUTH_VALUES = {
    "HMAC secret of 31 bytes": (
        [f"secret.authHmacSecret={set_literal(SHORT_HMAC_SECRET)}"], "/secret/authHmacSecret", "secret.authHmacSecret must be at least 32 bytes (got 31)"),
    "* inside a public channel": (
        ["eventStream.auth.publicChannels={town:*:chat}"], "/eventStream/auth/publicChannels/0",
        '"town:*:chat" is not a channel pattern'),
    "bad character in a public channel": (
        ["eventStream.auth.publicChannels={builds/all}"], "/eventStream/auth/publicChannels/0",
        '"builds/all" is not a channel pattern'),
    "public channel of 129 bytes": (
        ["eventStream.auth.publicChannels={" + "c" * 129 + "}"], "/eventStream/auth/publicChannels/0", "is not a channel pattern"),
    "blank audience": (["eventStream.auth.audience= "], "/eventStream/auth/audience", None),
    "zero reload interval": (["eventStream.auth.keysReloadSeconds=0"], "/eventStream/auth/keysReloadSeconds", None),
}

# Values only the chart's own checks refuse (cross-field rules, the JWKS' shape).
BAD_AUTH_COMBINATIONS = {
    "JWKS that is not JSON": (["secret.authPublicKeysJwks=not-json"], "secret.authPublicKeysJwks is not a JWKS"),
    "JWKS without keys": ([f"secret.authPublicKeysJwks={set_literal(json.dumps({'keys': []}))}"], 'non-empty "keys" list'),
    "HMAC secret beside existingSecret": (
        ["secret.existingSecret=creds", f"secret.authHmacSecret={AUTH_HMAC_SECRET}"],
        "put the HMAC secret in Secret creds under the key auth-hmac-secret"),
    "JWKS beside existingSecret": (
        ["secret.existingSecret=creds", f"secret.authPublicKeysJwks={set_literal(AUTH_JWKS)}"],
        "put the JWKS in Secret creds under the key auth-public-keys.jwks"),
    "publicKeysFromExistingSecret without existingSecret": (
        ["eventStream.auth.publicKeysFromExistingSecret=true"], "publicKeysFromExistingSecret needs secret.existingSecret"),
}


def _template(*sets: str, skip_schema: bool = False):
    args = ["template", "monkeytown-dev", CHART, "-f", values_file("dev")]
    for s in sets:
        args += ["--set", s]
    if skip_schema:
        args.append("--skip-schema-validation")
    return helm(*args)


@pytest.mark.parametrize("case", sorted(BAD_AUTH_VALUES))
def test_schema_and_chart_refuse_bad_auth_values(case):
    """A too-short HMAC secret, a bad public channel pattern, a blank audience or a zero reload interval fails helm template and helm lint through values.schema.json, naming the value; the chart's own check refuses it too with schema validation skipped. The HMAC secret is never echoed."""
    sets, schema_text, chart_text = BAD_AUTH_VALUES[case]
    outputs = []
    proc = _template(*sets)
    assert proc.returncode != 0, f"helm template accepted {sets}"
    assert "schema" in proc.stderr and schema_text in proc.stderr, proc.stderr
    lint = helm("lint", "--strict", CHART, "-f", values_file("dev"), *[a for s in sets for a in ("--set", s)])
    assert lint.returncode != 0 and schema_text in lint.stdout + lint.stderr
    outputs += [proc.stdout + proc.stderr, lint.stdout + lint.stderr]
    if chart_text is not None:
        proc = _template(*sets, skip_schema=True)
        assert proc.returncode != 0 and chart_text in proc.stderr, proc.stderr
        assert "execution error at (monkeytown/templates/" in proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    assert not [out for out in outputs if SHORT_HMAC_SECRET in out]


@pytest.mark.parametrize("case", sorted(BAD_AUTH_COMBINATIONS))
def test_chart_refuses_auth_values_that_would_be_ignored_or_unreadable(case):
    """A JWKS that is not one, a key value set beside secret.existingSecret (ignored: every channel would stay public) or publicKeysFromExistingSecret without existingSecret fails helm template with a message saying what to do."""
    sets, message = BAD_AUTH_COMBINATIONS[case]
    proc = _template(*sets)
    assert proc.returncode != 0, f"helm template accepted {sets}"
    assert message in proc.stderr, proc.stderr
    assert AUTH_HMAC_SECRET not in proc.stderr


def test_hmac_secret_of_32_bytes_is_accepted():
    """The length check's boundary: 32 bytes render (31 do not, above); "" means none."""
    assert _template("secret.authHmacSecret=" + "s" * 32).returncode == 0
    objs = render("dev", "secret.authHmacSecret=")
    assert "MT_AUTH_HMAC_SECRET" not in env_map(objs, event_stream(objs), "event-stream")


AUTH_VALUE_VARIABLES = {
    "eventStream.auth.publicChannels": "MT_PUBLIC_CHANNELS",
    "eventStream.auth.audience": "MT_AUTH_AUDIENCE",
    "eventStream.auth.keysReloadSeconds": "MT_AUTH_KEYS_RELOAD_SECONDS",
    "eventStream.auth.publicKeysFromExistingSecret": "MT_AUTH_PUBLIC_KEYS_FILE",
    "secret.authHmacSecret": "MT_AUTH_HMAC_SECRET",
    "secret.authPublicKeysJwks": "MT_AUTH_PUBLIC_KEYS_FILE",
}


@pytest.mark.parametrize("value,variable", sorted(AUTH_VALUE_VARIABLES.items()))
def test_each_auth_value_names_its_variable(value, variable):
    """Each token value's schema description names its variable in backticks, and values.yaml documents it (a comment naming the variable)."""
    assert f"`{variable}`" in schema_node(value)["description"]
    assert variable in values_comment(value), f"values.yaml's comment on {value} does not name {variable}"
