#!/usr/bin/env bash
# Set up what each make target uses, on a fresh machine or incrementally.
#   scripts/setup.sh synth   Python venv, Node LTS for jsii, cdk8s CLI            (make synth, restore, backups, diff)
#   scripts/setup.sh lint    Python venv with ruff and mypy                       (make lint)
#   scripts/setup.sh check   synth's + pytest, checkov, network-config-analyzer, promtool   (make check)
#   scripts/setup.sh test    everything: test toolchain, servers, scanners, Go-built tools (make test)
#   scripts/setup.sh test -- COMMAND...   set up, then run COMMAND while the Go builds finish (make test):
#                            tests that need a Go-built tool wait for it (tests/tools.py wait_for_go_build)
# A step is skipped when its inputs have not changed and what it installed still works. After
# installing, a step checks the result (the binary runs, the version is right) before it stamps;
# a failed step says what failed and stamps nothing, so the next run repairs it.
# Everything goes to stderr: stdout belongs to the command make runs next (a manifest, say).
set -euo pipefail
exec 3>&1 1>&2  # fd 3 keeps stdout for the COMMAND of `test -- COMMAND`
cd "$(dirname "$0")/.."
mode=${1:-synth}
case "$mode" in synth|lint|check|test) ;; *) echo "usage: $0 synth|lint|check|test [-- COMMAND...]"; exit 2 ;; esac
shift || true
then_run=()
if [ $# -gt 0 ]; then
  [ "$1" = -- ] && [ $# -gt 1 ] && [ "$mode" = test ] || { echo "usage: $0 test -- COMMAND..."; exit 2; }
  shift; then_run=("$@")
fi

NODE_LTS=22.23.3          # jsii supports ^22 and ^24; Node 20 is end-of-life
CDK8S_CLI=2.207.60
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] FAILED: %s\n' "$*"; exit 1; }

# One set-up at a time per clone (two terminals, make -j): the second waits, then finds the steps done.
mkdir -p .cache
exec 9>.cache/setup.lock
flock -n 9 || { say "another set-up runs in this clone; waiting for it"; flock 9; }

# step STAMP INPUTS CHECK INSTALL...: runs INSTALL unless STAMP holds the hash of INPUTS and
# `CHECK` passes; after INSTALL, `CHECK full` must pass before STAMP is written. CHECK is a
# command line (word-split) that prints why it failed.
step() {
  local stamp=$1 inputs=$2 check=$3; shift 3
  local want why; want=$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    # shellcheck disable=SC2086
    why=$($check 2>&1) && return 0
    say "repairing: $why"
  fi
  rm -f "$stamp"
  "$@"
  # shellcheck disable=SC2086
  why=$($check full 2>&1) || fail "$why"
  [ -z "$why" ] || echo "$why"
  mkdir -p "$(dirname "$stamp")"; echo "$want" > "$stamp"
}

# Steps that take long and need nothing from the others (Go builds) run alongside them. Each one
# records its pid (with the process's start time, so a reused pid is not mistaken for it) in
# .cache/setup-NAME.pid, and its exit status in .cache/setup-NAME.rc when it ends: the tests read
# both to wait for a Go build that still runs beside them (tests/tools.py wait_for_go_build).
bg_pids=(); bg_names=(); go_pids=(); go_names=()
background() {  # background NAME COMMAND...: output kept in .cache/setup-NAME.log
  local name=$1 other; shift
  for other in "${bg_names[@]}" "${go_names[@]}"; do [ "$other" != "$name" ] || fail "two background steps named $name"; done
  local ended="echo \$? > .cache/setup-$name.rc.new; mv .cache/setup-$name.rc.new .cache/setup-$name.rc"
  rm -f ".cache/setup-$name.rc" ".cache/setup-$name.pid"
  set -m
  # shellcheck disable=SC2064  # NAME now, the status when the step ends
  ( trap "$ended; rm -f .cache/setup-$name.pid" EXIT; "$@" ) >".cache/setup-$name.log" 2>&1 &
  set +m
  local pid=$! started; started=$(cut -d' ' -f22 "/proc/$pid/stat" 2>/dev/null || echo 0)
  [ -e ".cache/setup-$name.rc" ] || echo "$pid $started" > ".cache/setup-$name.pid"
  bg_pids+=("$pid"); bg_names+=("$name")
}
wait_background() {  # every background step, in order; the log of each failed one
  local i failed=""
  for i in "${!bg_pids[@]}"; do
    # Still installing (it has said so): say what the wait is for. A step that is only checking stays quiet.
    if kill -0 "${bg_pids[$i]}" 2>/dev/null && grep -q '^\[setup\]' ".cache/setup-${bg_names[$i]}.log"; then
      say "waiting for ${bg_names[$i]} (log: .cache/setup-${bg_names[$i]}.log)"
    fi
    if wait "${bg_pids[$i]}"; then
      grep '^\[setup\]' ".cache/setup-${bg_names[$i]}.log" || true
    else
      say "${bg_names[$i]} failed; the end of .cache/setup-${bg_names[$i]}.log:"
      grep -v '^go: downloading' ".cache/setup-${bg_names[$i]}.log" | tail -n 40
      failed+=" ${bg_names[$i]}"
    fi
  done
  bg_pids=(); bg_names=()
  [ -z "$failed" ] || fail "background step(s):$failed"
}
# The Go builds are set aside from the other background steps: `test -- COMMAND` runs COMMAND once the
# others are done, and waits for these only after it.
set_aside_go() {  # set_aside_go FROM: the background steps started from index FROM on are the Go builds
  go_pids=("${bg_pids[@]:$1}"); go_names=("${bg_names[@]:$1}")
  bg_pids=("${bg_pids[@]:0:$1}"); bg_names=("${bg_names[@]:0:$1}")
}
wait_go() { bg_pids=("${go_pids[@]}" "${bg_pids[@]}"); bg_names=("${go_names[@]}" "${bg_names[@]}"); go_pids=(); go_names=(); wait_background; }
# Set-up stopped by a failure or Ctrl-C stops its background steps too (each is a process group).
stop_background() { local pid; for pid in "${go_pids[@]}" "${bg_pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done; }
trap stop_background EXIT

# Node for jsii: the machine's own when it is a supported LTS (>= 22), else npm's node@22.
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
# The machine's node, not the one this script may have put on PATH (make adds .tools).
system_node() { PATH=$(tr ':' '\n' <<<"$PATH" | grep -v '/\.tools/' | paste -sd:) command -v node || true; }
node_setup() {
  command -v npm >/dev/null || fail "npm is required to install Node $NODE_LTS and cdk8s-cli"
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
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "${pkgs[@]}" || fail "npm install ${pkgs[*]}"
  [ -e .tools/jsii-node ] || ln -sfn "$PWD/.tools/node_modules/.bin/node" .tools/jsii-node
}
node_check() {  # node_check [full]: jsii's Node runs and is 22 or 24; the cdk8s CLI is the pinned one
  local v cli
  v=$(.tools/jsii-node --version 2>/dev/null) || { echo ".tools/jsii-node does not run"; return 1; }
  case "$v" in v22.*|v24.*) ;; *) echo ".tools/jsii-node is Node $v; jsii needs 22 or 24"; return 1 ;; esac
  if [ "$(readlink .tools/jsii-node)" = "$PWD/.tools/node_modules/.bin/node" ] && [ "$v" != "v$NODE_LTS" ]; then
    echo ".tools/jsii-node is Node $v, not the pinned $NODE_LTS"; return 1
  fi
  [ -x .tools/node_modules/.bin/cdk8s ] || { echo "cdk8s-cli is not installed in .tools/node_modules"; return 1; }
  [ "${1:-}" = full ] || return 0
  cli=$(PATH=$PWD/.tools/node_modules/.bin:$PATH cdk8s --version 2>&1) || { echo "cdk8s --version failed: $cli"; return 1; }
  [ "$cli" = "$CDK8S_CLI" ] || { echo "cdk8s --version says '$cli', not $CDK8S_CLI"; return 1; }
  say "jsii runs on node $v; cdk8s-cli $cli"
}
# Node and the cdk8s CLI (npm) install alongside the Python venv (pip): both mostly download.
[ "$mode" = lint ] || background nodejs step .tools/.setup "$NODE_LTS $CDK8S_CLI $(system_node)" node_check node_setup

# pip, quiet, minus this machine's noise about missing local wheel folders; fails loudly.
pip_install() {
  local py=$1; shift
  local log; log=$(mktemp)
  if ! "$py" -m pip install --quiet "$@" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log"; rm -f "$log"; fail "pip install $*"
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

# venv_check DIR REQUIREMENTS... [full]: the venv's python runs and every `name==version` pin
# of the files (and the files they include with -r) is installed at that version.
venv_check() {
  local dir=$1; shift
  [ "${*: -1}" = full ] && set -- "${@:1:$#-1}"
  [ -x "$dir/bin/python" ] || { echo "$dir/bin/python is missing"; return 1; }
  "$dir/bin/python" - "$@" <<'EOF'
import importlib.metadata as md, re, sys
from pathlib import Path
from pip._vendor.packaging.version import Version

def pins(path):
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            yield from pins(Path(path).parent / line[3:].strip())
        elif m := re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)", line):
            yield m[1], m[3]

problems = []
for name, want in {pin for path in sys.argv[1:] for pin in pins(path)}:
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        problems.append(f"{name} is not installed")
        continue
    if Version(have) != Version(want):
        problems.append(f"{name} {have} is installed, {want} is pinned")
if problems:
    print(f"{sys.prefix}: " + "; ".join(sorted(problems)))
    sys.exit(1)
EOF
}

# Go-built tools start first and build while the rest installs (test only: no gate of check uses them).
# go_tool STAMP MODULE "BINARIES" PACKAGE...: builds PACKAGEs of the Go module in MODULE (pinned by
# its go.mod and go.sum), stripped, into the folder of STAMP, in the background; then checks that
# each of BINARIES runs (`BINARY --version`). Adding a tool is one go_tool line (or one function
# like kwok_build when it needs more than the build) under "Go-built tools" below.
go_bin() { command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true; }
# The lowest priority: under `make test` the builds share the CPUs with the tests, which must not slow down
# (the scheduler weighs a nice-10 compile 110 and a nice-19 one 15 against a test's 1024; a build runs several).
GO_NICE=19
GO=$(go_bin)
go_std() {  # go_std MODULE [GOEXPERIMENT]
  # The builds start together and each needs the standard library: the first compiles it while the
  # others wait, then they find it in the build cache instead of compiling it side by side.
  (flock 8 && cd "$1" && GOTOOLCHAIN=local GOEXPERIMENT=${2:-} nice -n "$GO_NICE" "$GO" build -trimpath std) \
    8>"$PWD/.cache/go-std.lock" || fail "go build std"
}
go_build() {  # go_build OUT MODULE PACKAGE...
  local out=$1 module=$2; shift 2
  # Go >= 1.27 defaults to encoding/json/v2, with which the apiserver serves broken OpenAPI.
  local minor exp="" start=$SECONDS; minor=$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
  [ "$minor" -ge 27 ] && exp=nojsonv2
  mkdir -p "$out"; out=$(cd "$out" && pwd)
  say "building $* with $("$GO" env GOVERSION)"
  go_std "$module" "$exp"
  (cd "$module" && GOTOOLCHAIN=local GOEXPERIMENT=$exp GOFLAGS=-mod=readonly nice -n "$GO_NICE" \
    "$GO" build -trimpath -ldflags='-s -w' -o "$out/" "$@") || fail "go build in $module"
  say "built $* in $((SECONDS - start)) s"
}
go_check() {  # go_check OUT BINARY... [full]: each binary is there and starts (a truncated one cannot exec: 126)
  local out=$1 bin rc; shift
  for bin in "$@"; do
    [ "$bin" = full ] && continue
    [ -x "$out/$bin" ] || { echo "$out/$bin is missing"; return 1; }
    # Not every tool knows --version; any exit short of "cannot execute" (126, 127) or a signal means it ran.
    rc=0; "$out/$bin" --version >/dev/null 2>&1 </dev/null || rc=$?
    [ "$rc" -lt 126 ] || { echo "$out/$bin does not run (exit $rc)"; return 1; }
  done
}
go_inputs() { local module=$1; shift; cat "$module/go.mod" "$module/go.sum" "$@"; "$GO" env GOVERSION; }  # MODULE [FILE...]
go_tool() {
  local stamp=$1 module=$2 bins=$3; shift 3
  local out; out=$(dirname "$stamp")
  local sources; mapfile -t sources < <(find "$module" -maxdepth 2 -name '*.go' | sort)
  background "$(basename "$module")" step "$stamp" "$(go_inputs "$module" "${sources[@]}")" \
    "go_check $out $bins" go_build "$out" "$module" "$@"
}
if [ "$mode" = test ]; then
  if [ -z "$GO" ]; then
    [ "${CI:-}" != true ] || fail "Go is required to build the control plane and Envoy Gateway (scripts/control-plane, scripts/envoy-gateway)"
    say "Go not found: skipping the Go-built tools; their tests will be skipped"
  else
    first_go=${#bg_pids[@]}
    # --- Go-built tools ---
    # The local control plane the tests start (tests/control_plane.py), at the Kubernetes release of go.mod.
    # The real node's kubelet and kube-proxy come from the same release (tests/real_node.py).
    go_tool .tools/control-plane/.setup scripts/control-plane \
      "etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./etcd \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
    # The real node's add-ons: kube-router for NetworkPolicy, CoreDNS (only the plugins it uses) for DNS.
    go_tool .tools/control-plane/.setup-node scripts/control-plane/node "kube-router coredns" \
      github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ./coredns
    # kwok for simulated nodes, and its own "fast" node and pod stages (it runs no stage unless configured).
    kwok_build() {
      go_build "$1" scripts/control-plane/kwok sigs.k8s.io/kwok/cmd/kwok
      local kwok_dir stage; kwok_dir=$(cd scripts/control-plane/kwok && GOTOOLCHAIN=local "$GO" list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
      : > "$1/kwok-stages.yaml"
      for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
                   pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
        { echo "---"; cat "$kwok_dir/kustomize/stage/$stage.yaml"; } >> "$1/kwok-stages.yaml"
      done
    }
    kwok_check() { go_check "$@" && { [ -s .tools/control-plane/kwok-stages.yaml ] || { echo "kwok-stages.yaml is empty"; false; }; }; }
    background kwok step .tools/control-plane/.setup-kwok "$(go_inputs scripts/control-plane/kwok)" \
      "kwok_check .tools/control-plane kwok" kwok_build .tools/control-plane
    # kubeconform (tests/test_kubeconform.py, scripts/kubeconform.py).
    go_tool .tools/control-plane/.setup-kubeconform scripts/control-plane/kubeconform kubeconform \
      github.com/yannh/kubeconform/cmd/kubeconform
    # helm from its Go module: renders the upstream charts that ship in Go modules (tests/test_cluster_platform.py).
    go_tool .tools/control-plane/.setup-helm scripts/control-plane/helm helm helm.sh/helm/v3/cmd/helm
    # Envoy Gateway in standalone mode and egctl (tests/edge_harness.py, tests/test_edge_traffic.py):
    # the longest build here (47 min cold on a loaded machine), so its own step beside the others.
    go_tool .tools/envoy-gateway/.setup scripts/envoy-gateway "envoy-gateway egctl" \
      github.com/envoyproxy/gateway/cmd/envoy-gateway github.com/envoyproxy/gateway/cmd/egctl
    # Docker Compose (tests/test_compose_project.py, tests/docker_engine.py): a wrapper module, because
    # `go install` refuses compose's own go.mod (exclude lines); the binary is named as the CLI plugin.
    compose_build() {
      local out=$1 start=$SECONDS; mkdir -p "$out"; out=$(cd "$out" && pwd)
      say "building docker-compose with $("$GO" env GOVERSION)"
      go_std scripts/compose
      (cd scripts/compose && GOTOOLCHAIN=local GOFLAGS=-mod=readonly nice -n "$GO_NICE" "$GO" build -trimpath \
        -ldflags="-s -w -X github.com/docker/compose/v5/internal.Version=v5.6.0" \
        -o "$out/docker-compose" github.com/docker/compose/v5/cmd) || fail "go build in scripts/compose"
      say "built docker-compose in $((SECONDS - start)) s"
    }
    background compose step .tools/compose/.setup "$(go_inputs scripts/compose)" \
      "go_check .tools/compose docker-compose" compose_build .tools/compose
    set_aside_go "$first_go"
  fi
fi

# check and test: the scanners' venvs, the agent's venv and the Debian packages install in the background,
# beside the main venv (all mostly downloads) and the Go builds.
if [ "$mode" = check ] || [ "$mode" = test ]; then
  # Scanners whose dependency pins conflict (networkx; cfn-lint's) each get their own venv; mostly downloads,
  # so they install alongside each other and the apt step.
  # cfn-lint checks the ECS target's template in the tests only (tests/test_ecs_stack.py), not in `make check`.
  tools="checkov nca"; [ "$mode" = test ] && tools="$tools cfn-lint"
  for tool in $tools; do
    background "$tool" step ".venvs/.setup-$tool" "$(cat "requirements/tool-$tool.txt")" \
      "venv_check .venvs/$tool requirements/tool-$tool.txt" venv ".venvs/$tool" "requirements/tool-$tool.txt"
  done

  # The agent image's dependency set, exactly (docker/agent/requirements.lock, --no-deps as the
  # image installs it): tests/test_kga_runtime.py runs the stand-in app and kga_runtime in it.
  agent_venv() {
    [ -x .venvs/agent/bin/python ] || "$PYTHON" -m venv .venvs/agent
    say "installing docker/agent/requirements.lock into .venvs/agent"
    pip_install .venvs/agent/bin/python --no-deps -r docker/agent/requirements.lock
    # Without the Makefile's PYTHONPATH: it holds constructs/, where the main venv's editable install
    # writes kgstack.egg-info, and pip check would then judge kgstack's dependencies in this venv.
    local report
    report=$(env -u PYTHONPATH .venvs/agent/bin/python -m pip check 2>&1) || fail "pip check in .venvs/agent: $report"
  }
  if [ "$mode" = test ]; then
    background agent step .venvs/.setup-agent "$(cat docker/agent/requirements.lock)" \
      "venv_check .venvs/agent docker/agent/requirements.lock" agent_venv
  fi

  # Debian packages the gates and tests start or call: requirements/apt-check.txt for check (promtool),
  # plus requirements/apt.txt for test (servers on loopback, image builders, Chromium).
  apt_lists=requirements/apt-check.txt
  [ "$mode" = test ] && apt_lists="$apt_lists requirements/apt.txt"
  # shellcheck disable=SC2086
  apt_pkgs=$(sed 's/#.*//' $apt_lists | xargs)
  apt_setup() {
    say "installing Debian packages: $apt_pkgs"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || fail "apt-get update"
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $apt_pkgs >/dev/null \
      || fail "apt-get install $apt_pkgs"
  }
  apt_check() {  # every package is installed, and promtool (the one binary check calls) runs
    local missing
    # shellcheck disable=SC2086
    missing=$(dpkg-query -W -f='${Package} ${Status}\n' $apt_pkgs 2>&1 | grep -v ' install ok installed$' || true)
    [ -z "$missing" ] || { echo "Debian packages not installed: $(echo "$missing" | cut -d' ' -f1 | tr '\n' ' ')"; return 1; }
    promtool --version >/dev/null 2>&1 || { echo "promtool does not run"; return 1; }
  }
  # shellcheck disable=SC2086
  background apt step ".venv/.setup-apt$([ "$mode" = test ] || echo -check)" "$(cat $apt_lists)" apt_check apt_setup
fi

main_venv() {
  # shellcheck disable=SC2086
  venv .venv $reqs
  pip_install .venv/bin/python --no-deps -e .
  # Synth runs with `python -O` (see Makefile); compile both bytecode levels once, since a
  # machine with PYTHONDONTWRITEBYTECODE would otherwise recompile large modules every run.
  .venv/bin/python -m compileall -q -o 0 -o 1 -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
}
case "$mode" in
  synth) reqs=requirements/base.txt ;;
  lint) reqs=requirements/lint.txt ;;
  check) reqs=requirements/check.txt ;;
  test) reqs="requirements/test.txt $(find requirements -name '*-test.txt' | sort | tr '\n' ' ')" ;;
esac
# shellcheck disable=SC2086
step ".venv/.setup-$mode" "$(cat $reqs requirements/base.txt requirements/cloud.txt pyproject.toml)" "venv_check .venv $reqs" main_venv
# Our own modules too, after any edit: otherwise every synth compiles all of kgstack (~40 ms).
# The stamp is touched first, so a file saved during the compile is compiled next time.
if [ ! -f .cache/bytecode.stamp ] || [ ! -d constructs/kgstack/__pycache__ ] || [ -n "$(find constructs/kgstack -name '*.py' -newer .cache/bytecode.stamp -print -quit)" ]; then
  touch .cache/bytecode.stamp
  .venv/bin/python -m compileall -q -o 0 -o 1 constructs/kgstack >/dev/null
fi
[ "$mode" = lint ] && exit 0  # lint needs no Node

if [ "$mode" = synth ]; then wait_background; exit 0; fi

wait_background
[ ${#then_run[@]} -gt 0 ] || { wait_go; exit 0; }
# `test -- COMMAND`: the tests start now, the Go builds go on beside them (at a lower priority), and the
# tests that need a Go-built tool wait for it. COMMAND's status is the result; a failed build fails too.
[ ${#go_names[@]} -eq 0 ] || say "running ${then_run[*]} while the Go builds finish (${go_names[*]}); tests that need them wait"
status=0
"${then_run[@]}" >&3 9>&- || status=$?
wait_go
exit "$status"
