"""The chart and `mt-stream deploy` agree: same event-stream HPA and PDB, same pod budget.

The chart's values and the `Budget` type carry the same numbers (docs/configuration.md lists
the settings and their defaults), and the event-stream HPA/PDB the chart renders are the objects
`mt-stream deploy --print` generates (docs/deploy.md, docs/scaling-profiles.md, docs/chart.md). These tests render the chart with the real helm and run
the real binary, parse both YAML streams and compare the parsed objects.

The binary is $MT_STREAM_BIN, else <repo>/target/debug/mt-stream (scripts/test runs
`cargo test` first, which builds it).

Run: bash scripts/install-test-tools.sh && .tools/venv/bin/pytest chart/tests
"""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from test_chart import (
    CHART,
    ENVS,
    IGNORED_LABELS,
    REPO,
    container,
    env_map,
    event_stream,
    find,
    helm,
    one,
    values_file,
)

MT_STREAM_BIN = Path(os.environ.get("MT_STREAM_BIN") or REPO / "target" / "debug" / "mt-stream")

HPA = "HorizontalPodAutoscaler"
PDB = "PodDisruptionBudget"

_BINARY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
_DECIMAL_UNITS = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


# --- helpers ----------------------------------------------------------------------------------


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (integer, optional Ki/Mi/Gi/Ti or k/M/G/T suffix) in bytes."""
    m = re.fullmatch(r"([0-9]+)([A-Za-z]*)", str(text).strip())
    assert m, f"not an integer memory quantity: {text!r}"
    number, suffix = int(m.group(1)), m.group(2)
    units = {"": 1, **_BINARY_UNITS, **_DECIMAL_UNITS}
    assert suffix in units, f"unknown quantity suffix in {text!r}"
    return number * units[suffix]


def _binary() -> Path:
    if not MT_STREAM_BIN.is_file() or not os.access(MT_STREAM_BIN, os.X_OK):
        pytest.fail(
            f"mt-stream binary not found at {MT_STREAM_BIN}: run `cargo build --bin mt-stream` "
            "(or set MT_STREAM_BIN to the binary to test)",
            pytrace=False,
        )
    return MT_STREAM_BIN


def _clean_env() -> dict[str, str]:
    """The caller's environment without MT_* variables (deploy and serve read their budget from
    MT_MAX_CONNECTIONS / MT_MEMORY_LIMIT / ..., which would otherwise move the defaults) and
    without kubeconfig settings (--print touches no cluster anyway)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MT_") and k != "KUBECONFIG"}


@functools.lru_cache(maxsize=None)
def mt_stream(*args: str) -> str:
    """Runs the real binary with `args`; returns stdout, fails the test on a non-zero exit."""
    proc = subprocess.run([str(_binary()), *args], capture_output=True, text=True, cwd=REPO, env=_clean_env())
    if proc.returncode != 0:
        pytest.fail(f"mt-stream {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def deploy_print(env: str, *flags: str) -> tuple[dict, dict]:
    """`mt-stream deploy --env ENV --print FLAGS...`, parsed: (HPA, PDB), in that order."""
    docs = [d for d in yaml.safe_load_all(mt_stream("deploy", "--env", env, "--print", *flags)) if d]
    assert [d["kind"] for d in docs] == [HPA, PDB], f"deploy --print printed {[d.get('kind') for d in docs]}"
    return copy.deepcopy(docs[0]), copy.deepcopy(docs[1])


@functools.lru_cache(maxsize=None)
def _template(env: str, release: str, sets: tuple[str, ...], set_strings: tuple[str, ...]) -> str:
    args: list[str | Path] = ["template", release, CHART, "-f", values_file(env), "--namespace", f"monkeytown-{env}"]
    for s in sets:
        args += ["--set", s]
    for s in set_strings:
        args += ["--set-string", s]
    return helm(*args, check=True).stdout


def render_chart(env: str, *sets: str, release: str | None = None, set_strings: tuple[str, ...] = ()) -> list[dict]:
    """helm template of values-<env>.yaml under release `release` (default monkeytown-<env>), parsed."""
    text = _template(env, release or f"monkeytown-{env}", tuple(sets), tuple(set_strings))
    return copy.deepcopy([d for d in yaml.safe_load_all(text) if d])


def chart_event_stream_objects(objs: list[dict], env: str) -> tuple[dict, dict]:
    name = f"monkeytown-{env}-event-stream"
    return one(objs, HPA, name), one(objs, PDB, name)


def comparable(obj: dict) -> dict:
    """apiVersion, kind, metadata.name, the labels but IGNORED_LABELS, and the whole spec."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {
            "name": meta["name"],
            "labels": {k: v for k, v in meta.get("labels", {}).items() if k not in IGNORED_LABELS},
        },
        "spec": obj["spec"],
    }


def differences(chart: object, deploy: object, path: str = "") -> list[str]:
    """Every field where the two parsed objects differ, as `path: chart=... deploy=...`."""
    if isinstance(chart, dict) and isinstance(deploy, dict):
        out = []
        for key in sorted(set(chart) | set(deploy), key=str):
            sub = f"{path}.{key}"
            if key not in chart:
                out.append(f"{sub}: missing in the chart, deploy={deploy[key]!r}")
            elif key not in deploy:
                out.append(f"{sub}: chart={chart[key]!r}, missing in deploy")
            else:
                out += differences(chart[key], deploy[key], sub)
        return out
    if isinstance(chart, list) and isinstance(deploy, list):
        if len(chart) != len(deploy):
            return [f"{path}: chart has {len(chart)} items, deploy {len(deploy)}: chart={chart!r} deploy={deploy!r}"]
        return [d for i, (a, b) in enumerate(zip(chart, deploy)) for d in differences(a, b, f"{path}[{i}]")]
    if chart != deploy or type(chart) is not type(deploy):
        return [f"{path}: chart={chart!r} deploy={deploy!r}"]
    return []


def assert_same_object(chart_obj: dict, deploy_obj: dict) -> None:
    diffs = differences(comparable(chart_obj), comparable(deploy_obj))
    assert not diffs, f"{chart_obj['kind']}/{chart_obj['metadata']['name']} differs:\n" + "\n".join(diffs)
    # Beyond the compared fields, neither side carries anything the other lacks
    # (no namespace, annotations or status on one side only).
    assert set(chart_obj) == set(deploy_obj)
    assert set(chart_obj["metadata"]) == set(deploy_obj["metadata"]) == {"name", "labels"}


def metric(hpa: dict, name: str) -> dict:
    """The HPA metric whose resource or Pods metric is called `name`."""
    for m in hpa["spec"]["metrics"]:
        source = m.get("resource") or {}
        if source.get("name") == name or m.get("pods", {}).get("metric", {}).get("name") == name:
            return m
    raise AssertionError(f"no metric {name} in {hpa['metadata']['name']}")


def help_defaults(help_text: str) -> dict[str, str]:
    """`--flag` -> the text of its help entry (flag line and description joined), from clap's --help."""
    entries: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        m = re.match(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", line)
        if m:
            current = m.group(1)
            entries[current] = line.strip()
        elif current and line.strip():
            entries[current] += " " + line.strip()
    return entries


def clap_default(entry: str) -> str:
    m = re.search(r"\[default: ([^\]]+)\]", entry)
    assert m, f"no [default: ...] in {entry!r}"
    return m.group(1)


# --- the objects: chart rendering versus deploy --print -------------------------------------------


@pytest.mark.parametrize("connections_metric", [False, True], ids=["cpu-memory", "connections-metric"])
@pytest.mark.parametrize("env", ENVS)
def test_chart_event_stream_hpa_and_pdb_equal_deploy_print(env, connections_metric):
    """The chart's event-stream HPA and PDB equal `mt-stream deploy --env <env> --print` field by field, with and without the connections metric."""
    sets = ("eventStream.autoscaling.connectionsMetric=true",) if connections_metric else ()
    flags = ("--connections-metric",) if connections_metric else ()
    chart_hpa, chart_pdb = chart_event_stream_objects(render_chart(env, *sets), env)
    deploy_hpa, deploy_pdb = deploy_print(env, *flags)
    assert_same_object(chart_hpa, deploy_hpa)
    assert_same_object(chart_pdb, deploy_pdb)
    # The connections metric is really there (or not) on both sides, after cpu and memory.
    names = [m.get("resource", m.get("pods", {}).get("metric", {})).get("name") for m in deploy_hpa["spec"]["metrics"]]
    assert names == ["cpu", "memory"] + (["mt_stream_connections"] if connections_metric else [])
    # The ignored labels are the only ones that differ, and they differ as expected.
    for chart_obj, deploy_obj in ((chart_hpa, deploy_hpa), (chart_pdb, deploy_pdb)):
        assert chart_obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert deploy_obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mt-stream"
        assert "helm.sh/chart" not in deploy_obj["metadata"]["labels"]


@pytest.mark.parametrize("env", ENVS)
def test_release_name_moves_the_instance_label_and_selector_in_both(env):
    """With release X (`helm template X` vs `deploy --release X`) both give instance label and PDB selector X, names stay monkeytown-<env>-event-stream."""
    release = "mt-canary"
    objs = render_chart(env, release=release)
    chart_hpa, chart_pdb = chart_event_stream_objects(objs, env)
    deploy_hpa, deploy_pdb = deploy_print(env, "--release", release)
    assert_same_object(chart_hpa, deploy_hpa)
    assert_same_object(chart_pdb, deploy_pdb)
    for obj in (deploy_hpa, deploy_pdb):
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        assert obj["metadata"]["name"] == f"monkeytown-{env}-event-stream"
    assert deploy_pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == release
    # deploy's PDB selects the chart's event-stream pods of that release, and only those.
    selector = deploy_pdb["spec"]["selector"]["matchLabels"].items()
    selected = [d["metadata"]["name"] for d in find(objs, "Deployment")
                if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert selected == [f"monkeytown-{env}-event-stream"]
    assert deploy_hpa["spec"]["scaleTargetRef"]["name"] in selected
    # And the default release's objects do not select them.
    default_pdb = deploy_print(env)[1]
    assert not default_pdb["spec"]["selector"]["matchLabels"].items() <= event_stream(objs, env)["spec"]["template"]["metadata"]["labels"].items()


def test_the_comparison_catches_a_drifted_chart_value():
    """A chart value that drifts from deploy's profile (prod maxReplicas 11, PDB maxUnavailable 2) is reported as a difference, so the comparison can fail."""
    chart_hpa, chart_pdb = chart_event_stream_objects(
        render_chart("prod", "eventStream.autoscaling.maxReplicas=11", "eventStream.autoscaling.pdb.maxUnavailable=2"), "prod")
    deploy_hpa, deploy_pdb = deploy_print("prod")
    assert differences(comparable(chart_hpa), comparable(deploy_hpa)) == [".spec.maxReplicas: chart=11 deploy=10"]
    assert differences(comparable(chart_pdb), comparable(deploy_pdb)) == [".spec.maxUnavailable: chart=2 deploy=1"]
    with pytest.raises(AssertionError):
        assert_same_object(chart_hpa, deploy_hpa)


# --- one owner --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_managed_by_mt_stream_leaves_the_objects_to_deploy_alone(env):
    """With managedBy=mt-stream the chart renders no event-stream HPA/PDB while `deploy --print` still produces both, targeting the chart's Deployment."""
    objs = render_chart(env, "eventStream.autoscaling.managedBy=mt-stream")
    name = f"monkeytown-{env}-event-stream"
    assert not find(objs, HPA, name) and not find(objs, PDB, name)
    assert find(objs, HPA, f"monkeytown-{env}-web") and find(objs, PDB, f"monkeytown-{env}-web")
    deployment = event_stream(objs, env)
    assert "replicas" not in deployment["spec"], "the HPA deploy applies owns replicas"
    deploy_hpa, deploy_pdb = deploy_print(env)
    assert deploy_hpa["metadata"]["name"] == deploy_pdb["metadata"]["name"] == name
    assert deploy_hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert deploy_pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # And what deploy applies is what the chart would have rendered itself.
    chart_hpa, chart_pdb = chart_event_stream_objects(render_chart(env), env)
    assert_same_object(chart_hpa, deploy_hpa)
    assert_same_object(chart_pdb, deploy_pdb)


# --- the budget: chart values versus the binary's defaults ---------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_chart_budget_equals_the_binary_defaults(env):
    """The chart's MT_MAX_CONNECTIONS, MT_HEARTBEAT_INTERVAL_MS and memory limit equal the binary's defaults (serve --help, deploy --help, deploy --print's 75% memory target)."""
    serve = help_defaults(mt_stream("serve", "--help"))
    deploy = help_defaults(mt_stream("deploy", "--help"))
    max_connections = clap_default(serve["--max-connections"])
    heartbeat_ms = clap_default(serve["--heartbeat-interval-ms"])
    m = re.search(r"else ([0-9]+(?:Ki|Mi|Gi|Ti)?)\b", serve["--memory-limit"])
    assert m, f"serve --help does not document the memory fallback: {serve['--memory-limit']!r}"
    serve_memory = quantity_bytes(m.group(1))
    # deploy describes the same pod: the same defaults.
    assert clap_default(deploy["--max-connections"]) == max_connections
    assert quantity_bytes(clap_default(deploy["--memory-limit"])) == serve_memory
    # deploy --print's memory target is 75% of its budget memory: 768Mi <=> a 1Gi budget.
    target = quantity_bytes(metric(deploy_print(env)[0], "memory")["resource"]["target"]["averageValue"])
    assert target * 100 == serve_memory * 75, f"memory target {target} is not 75% of {serve_memory}"

    objs = render_chart(env)
    deployment = event_stream(objs, env)
    env_vars = env_map(objs, deployment, "event-stream")
    assert env_vars["MT_MAX_CONNECTIONS"]["value"] == max_connections
    assert env_vars["MT_HEARTBEAT_INTERVAL_MS"]["value"] == heartbeat_ms
    # MT_MEMORY_LIMIT is the container's own memory limit, which is the binary's default budget.
    assert env_vars["MT_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"] == {"containerName": "event-stream", "resource": "limits.memory"}
    assert quantity_bytes(container(deployment, "event-stream")["resources"]["limits"]["memory"]) == serve_memory


@pytest.mark.parametrize("max_connections", [2000, 1500, 1])
def test_changing_max_connections_moves_the_chart_and_deploy_alike(max_connections):
    """eventStream.ws.maxConnections=N and `deploy --max-connections N --connections-metric` give the same connections target (2000 -> 1400) and the same HPA."""
    objs = render_chart("prod", f"eventStream.ws.maxConnections={max_connections}",
                        "eventStream.autoscaling.connectionsMetric=true")
    chart_hpa, chart_pdb = chart_event_stream_objects(objs, "prod")
    deploy_hpa, deploy_pdb = deploy_print("prod", "--max-connections", str(max_connections), "--connections-metric")
    expected = str(max(1, max_connections * 70 // 100))
    assert metric(deploy_hpa, "mt_stream_connections")["pods"]["target"]["averageValue"] == expected
    assert metric(chart_hpa, "mt_stream_connections")["pods"]["target"]["averageValue"] == expected
    assert_same_object(chart_hpa, deploy_hpa)
    assert_same_object(chart_pdb, deploy_pdb)
    assert env_map(objs, event_stream(objs, "prod"), "event-stream")["MT_MAX_CONNECTIONS"]["value"] == str(max_connections)
    if max_connections == 2000:
        assert expected == "1400"


@pytest.mark.parametrize("memory_limit", ["2Gi", "512Mi", "1536Mi", "1000000000"])
def test_changing_the_memory_limit_moves_the_chart_and_deploy_alike(memory_limit):
    """eventStream.resources.limits.memory=M and `deploy --memory-limit M` give the same memory target (2Gi -> 1536Mi) and the same HPA."""
    objs = render_chart("staging", set_strings=(f"eventStream.resources.limits.memory={memory_limit}",))
    chart_hpa, _ = chart_event_stream_objects(objs, "staging")
    deploy_hpa, _ = deploy_print("staging", "--memory-limit", memory_limit)
    assert_same_object(chart_hpa, deploy_hpa)
    target = quantity_bytes(metric(chart_hpa, "memory")["resource"]["target"]["averageValue"])
    limit = quantity_bytes(memory_limit)
    assert target == limit // 100 * 75 + limit % 100 * 75 // 100
    if memory_limit == "2Gi":
        assert metric(chart_hpa, "memory")["resource"]["target"]["averageValue"] == "1536Mi"


def test_an_explicit_target_memory_overrides_the_derived_one():
    """eventStream.autoscaling.targetMemory, when set, replaces the derived 75% target (the chart's own choice, no longer deploy's)."""
    objs = render_chart("dev", set_strings=("eventStream.autoscaling.targetMemory=900Mi",))
    chart_hpa, _ = chart_event_stream_objects(objs, "dev")
    assert metric(chart_hpa, "memory")["resource"]["target"]["averageValue"] == "900Mi"
    diffs = differences(comparable(chart_hpa), comparable(deploy_print("dev")[0]))
    assert diffs == [".spec.metrics[1].resource.target.averageValue: chart='900Mi' deploy='768Mi'"]
