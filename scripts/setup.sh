#!/usr/bin/env bash
# Set up everything this project runs with, on a fresh machine or incrementally.
#   scripts/setup.sh synth   Python venv, Node LTS for jsii, cdk8s CLI   (for `make synth`)
#   scripts/setup.sh lint    Python venv with ruff and mypy              (for `make lint`)
#   scripts/setup.sh test    all of the above + test toolchain, servers, scanners
# Each step is skipped when its inputs have not changed, so `make` stays fast.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-synth}
case "$mode" in synth|lint|test) ;; *) echo "usage: $0 synth|lint|test" >&2; exit 2 ;; esac

NODE_LTS=22.23.3          # jsii supports ^22 and ^24; Node 20 is end-of-life
CDK8S_CLI=2.207.60
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[setup] %s\n' "$*"; }

# Runs "$@" only when the hash of the listed inputs differs from the stamp.
stamp_run() {
  local stamp=$1 inputs=$2; shift 2
  local want; want=$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  "$@"
  mkdir -p "$(dirname "$stamp")"; echo "$want" > "$stamp"
}

# pip, quiet, minus this machine's noise about missing local wheel folders; fails loudly.
pip_install() {
  local py=$1; shift
  local log; log=$(mktemp)
  if ! "$py" -m pip install --quiet "$@" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
}

venv() {  # venv DIR REQUIREMENTS...
  local dir=$1; shift
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  say "installing $* into $dir"
  local args=(); for req in "$@"; do args+=(-r "$req"); done
  pip_install "$dir/bin/python" "${args[@]}"
}

main_venv() {
  # shellcheck disable=SC2086
  venv .venv $reqs
  pip_install .venv/bin/python --no-deps -e .
  # Synth runs with `python -O` (see Makefile); compile both bytecode levels once, since a
  # machine with PYTHONDONTWRITEBYTECODE would otherwise recompile large modules every run.
  .venv/bin/python -m compileall -q -o 0 -o 1 -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
}
reqs=requirements/base.txt
[ "$mode" = lint ] && reqs=requirements/lint.txt
if [ "$mode" = test ]; then
  reqs="requirements/test.txt $(find requirements -name '*-test.txt' | sort | tr '\n' ' ')"
fi
# shellcheck disable=SC2086
stamp_run ".venv/.setup-$mode" "$(cat $reqs requirements/base.txt pyproject.toml)" main_venv
# Our own modules too, after any edit: otherwise every synth compiles all of kgstack (~40 ms).
# The stamp is touched first, so a file saved during the compile is compiled next time.
if [ ! -f .cache/bytecode.stamp ] || [ ! -d constructs/kgstack/__pycache__ ] || [ -n "$(find constructs/kgstack -name '*.py' -newer .cache/bytecode.stamp -print -quit)" ]; then
  mkdir -p .cache; touch .cache/bytecode.stamp
  .venv/bin/python -m compileall -q -o 0 -o 1 constructs/kgstack >/dev/null
fi

# Node for jsii: the machine's own when it is a supported LTS (>= 22), else npm's node@22.
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
# The machine's node, not the one this script may have put on PATH (make adds .tools).
system_node() { PATH=$(tr ':' '\n' <<<"$PATH" | grep -v '/\.tools/' | paste -sd:) command -v node || true; }
node_setup() {
  command -v npm >/dev/null || { echo "npm is required to install Node $NODE_LTS and cdk8s-cli" >&2; exit 1; }
  mkdir -p .tools; rm -f .tools/jsii-node
  local pkgs=("cdk8s-cli@$CDK8S_CLI")
  local system_node; system_node=$(system_node)
  if [ -n "$system_node" ] && [ "$(node_major "$system_node")" -ge 22 ]; then
    ln -sfn "$system_node" .tools/jsii-node
  else
    pkgs+=("node@$NODE_LTS")
  fi
  say "installing ${pkgs[*]} into .tools"
  rm -rf .tools/node_modules .tools/package.json .tools/package-lock.json
  npm install --prefix .tools --no-audit --no-fund --silent "${pkgs[@]}"
  [ -e .tools/jsii-node ] || ln -sfn "$PWD/.tools/node_modules/.bin/node" .tools/jsii-node
  say "jsii runs on node $(.tools/jsii-node --version)"
}
[ "$mode" = lint ] && exit 0  # lint needs no Node
stamp_run .tools/.setup "$NODE_LTS $CDK8S_CLI $(system_node)" node_setup

[ "$mode" = test ] || exit 0

# Debian packages the tests start or call (servers on loopback, promtool, image builders).
apt_setup() {
  local pkgs; pkgs=$(grep -hv '^#' requirements/apt.txt | tr '\n' ' ')
  say "installing Debian packages: $pkgs"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
}
stamp_run .venv/.setup-apt "$(cat requirements/apt.txt)" apt_setup

# Scanners whose dependency pins conflict (networkx) each get their own venv.
for tool in checkov nca; do
  stamp_run ".venvs/.setup-$tool" "$(cat "requirements/tool-$tool.txt")" \
    venv ".venvs/$tool" "requirements/tool-$tool.txt"
done

# The agent image's dependency set, exactly (docker/agent/requirements.lock, --no-deps as the
# image installs it): tests/test_kga_runtime.py runs the stand-in app and kga_runtime in it.
agent_venv() {
  [ -x .venvs/agent/bin/python ] || "$PYTHON" -m venv .venvs/agent
  say "installing docker/agent/requirements.lock into .venvs/agent"
  pip_install .venvs/agent/bin/python --no-deps -r docker/agent/requirements.lock
  .venvs/agent/bin/python -m pip check >/dev/null
}
stamp_run .venvs/.setup-agent "$(cat docker/agent/requirements.lock)" agent_venv

# Go-built tools (scripts/control-plane/): the local control plane the tests start (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl), kwok for simulated nodes,
# and kubeconform. Each module pins its versions in go.mod/go.sum; binaries go to .tools/.
go_bin() { command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true; }
GO=$(go_bin)
go_tools_setup() {
  local out=$PWD/.tools/control-plane
  mkdir -p "$out"
  # Go >= 1.27 defaults to encoding/json/v2, with which the apiserver serves broken OpenAPI.
  local minor; minor=$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
  local exp=""; [ "$minor" -ge 27 ] && exp=nojsonv2
  local start=$SECONDS
  say "building the control plane, kwok and kubeconform with $("$GO" env GOVERSION) (first run takes minutes)"
  (cd scripts/control-plane && GOTOOLCHAIN=local GOEXPERIMENT=$exp GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath -ldflags=-s -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./etcd)
  (cd scripts/control-plane/kwok && GOTOOLCHAIN=local GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath -ldflags=-s -o "$out/" sigs.k8s.io/kwok/cmd/kwok)
  # kwok runs no stage unless configured: its own "fast" node and pod stages, from the same module.
  local kwok_dir; kwok_dir=$(cd scripts/control-plane/kwok && GOTOOLCHAIN=local "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  local stage; : > "$out/kwok-stages.yaml"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
               pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    { echo "---"; cat "$kwok_dir/kustomize/stage/$stage.yaml"; } >> "$out/kwok-stages.yaml"
  done
  (cd scripts/control-plane/kubeconform && GOTOOLCHAIN=local GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath -ldflags=-s -o "$out/" github.com/yannh/kubeconform/cmd/kubeconform)
  say "Go tools built in $((SECONDS - start)) s"
}
if [ -z "$GO" ]; then
  [ "${CI:-}" != true ] || { echo "Go is required to build the control plane (scripts/control-plane)" >&2; exit 1; }
  say "Go not found: skipping the control plane; its tests will be skipped"
else
  stamp_run .tools/control-plane/.setup \
    "$(cat scripts/control-plane/go.mod scripts/control-plane/go.sum scripts/control-plane/*/go.mod scripts/control-plane/*/go.sum scripts/control-plane/etcd/main.go) $("$GO" env GOVERSION)" \
    go_tools_setup
fi
