#!/usr/bin/env python3
"""Run the REAL app (a checkout at the pinned commit) as dist/<env>'s query and indexer pods, on loopback.

Not part of CI: the app's source cannot be fetched there (the tests run the stand-in,
tests/fixtures/agent-app). This is the closing check of issue 16, repeatable:

    git --git-dir=<mirror of anhhai680/knowledge-graph-agent> archive f4adf2b | tar -x -C /tmp/kga-app
    .venv/bin/python scripts/real_app_run.py /tmp/kga-app [--env prod] [--out report.json]

What runs is what dist/<env> ships: each pod's args (``python -m kga_runtime``) and env (its ConfigMap's and
its own, Secrets made up), started by tests/rendered.py with the agent venv (.venvs/agent, the image's lock),
next to dist/<env>'s Redis and Chroma servers and a fake OpenAI-compatible server (tests/fake_openai.py).
The app clones ``https://github.com/acme/tiny-agent``: a small local git repository that git reaches through
``url.<dir>.insteadOf`` in the pod's HOME (no network). A ``git`` wrapper on PATH records each git command line.

It prints a JSON report: status codes and timings of /health, /livez, /readyz, /metrics, indexing and
queries; the Chroma server's collections; Redis keys, TTLs and cache counters; git command lines; and the
log lines that matter. The app's own code is never copied into the project.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402
from rendered import AgentPod, run_agent, run_chroma, run_redis  # noqa: E402

REPOSITORY = "https://github.com/acme/tiny-agent"
FILES = {
    "README.md": "# tiny-agent\n\nA small repository for the real-app run: it answers questions about greetings.\n",
    "tiny/greet.py": 'def greet(name: str) -> str:\n    """Say hello to ``name``."""\n    return f"hello {name}"\n',
    "tiny/count.py": "def count_words(text: str) -> int:\n    return len(text.split())\n",
    "config.yaml": "greeting: hello\nretries: 3\n",
}


def request(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, float, Any]:
    """Status (0 on a timeout or refused connection), seconds taken, and the JSON (or text) answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read().decode()
    except OSError as err:
        return 0, round(time.monotonic() - started, 3), str(err)
    took = round(time.monotonic() - started, 3)
    try:
        return status, took, json.loads(raw)
    except ValueError:
        return status, took, raw


def make_repository(root: Path) -> Path:
    """A bare repository at <root>/github/acme/tiny-agent.git with one commit on main."""
    work = root / "tiny-agent-src"
    for name, text in FILES.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text, encoding="utf-8")
    git = ["git", "-c", "user.name=acme", "-c", "user.email=dev@acme.example.com", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "tiny-agent"]):
        subprocess.run([*git, *args], cwd=work, check=True, capture_output=True)
    bare = root / "github" / "acme" / "tiny-agent.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True)
    return root / "github"


def push_change(root: Path) -> None:
    """A second commit on main: one file changed, one added, one deleted."""
    work = root / "tiny-agent-src"
    (work / "tiny" / "count.py").write_text("def count_words(text: str) -> int:\n    return len(text.split()) + 0\n")
    (work / "tiny" / "shout.py").write_text("def shout(text: str) -> str:\n    return text.upper()\n")
    (work / "config.yaml").unlink()
    git = ["git", "-c", "user.name=acme", "-c", "user.email=dev@acme.example.com"]
    for args in (
        ["add", "."],
        ["commit", "-qm", "change"],
        ["push", "-q", str(root / "github/acme/tiny-agent.git"), "main"],
    ):
        subprocess.run([*git, *args], cwd=work, check=True, capture_output=True)


def git_wrapper(root: Path) -> Path:
    """A ``git`` first on PATH that appends its argv and the names of GIT_CONFIG_* keys to git-argv.jsonl."""
    real = shutil.which("git")
    assert real, "git not installed"
    bin_dir = root / "bin"
    bin_dir.mkdir()
    log = root / "git-argv.jsonl"
    wrapper = bin_dir / "git"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "keys = sorted(os.environ[k] for k in os.environ if k.startswith('GIT_CONFIG_KEY_'))\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'argv': sys.argv[1:], 'config_keys': keys}) + '\\n')\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n",
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return bin_dir


class Poller:
    """Polls the app's /health and the runtime's /livez and /readyz of a pod while something runs."""

    def __init__(self, pod: AgentPod) -> None:
        self.pod = pod
        self.samples: dict[str, list[tuple[int, float, Any]]] = {"health": [], "livez": [], "readyz": []}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for name, url in (
                ("health", f"{self.pod.url('http')}/health"),
                ("livez", f"{self.pod.url('runtime')}/livez"),
                ("readyz", f"{self.pod.url('runtime')}/readyz"),
            ):
                status, took, body = request("GET", url, timeout=1)
                reason = body.get("reason") if isinstance(body, dict) else None
                self.samples[name].append((status, took, reason))
            time.sleep(0.25)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, samples in self.samples.items():
            statuses: dict[str, int] = {}
            for status, _, _ in samples:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            out[name] = {
                "statuses": statuses,
                "max_seconds": max((t for _, t, _ in samples), default=0),
                "reasons": sorted({r for _, _, r in samples if r}),
            }
        return out


def wait_workflow(pod: AgentPod, workflow_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request("GET", f"{pod.url()}/api/v1/workflows/{workflow_id}/status", timeout=30)
        if status == 200 and body.get("status") in ("completed", "failed"):
            return dict(body)
        time.sleep(0.5)
    raise AssertionError(f"workflow {workflow_id} did not finish:\n{pod.tail()}")


def index(pod: AgentPod, incremental: bool) -> dict[str, Any]:
    started = time.monotonic()
    with Poller(pod) as poller:
        status, took, body = request(
            "POST", f"{pod.url()}/api/v1/index/repository", {"repository_url": REPOSITORY, "incremental": incremental}
        )
        workflow = wait_workflow(pod, body["workflow_id"]) if status == 200 else {"error": body}
    return {
        "post_status": status,
        "post_seconds": took,
        "workflow_status": workflow.get("status"),
        "workflow_metadata": {
            k: v
            for k, v in (workflow.get("metadata") or {}).items()
            if k in ("processed_files", "total_chunks", "embeddings_generated", "errors", "change_summary")
        },
        "error_message": workflow.get("error_message"),
        "seconds": round(time.monotonic() - started, 2),
        "while_running": poller.summary(),
    }


def query(pod: AgentPod, llm: FakeOpenAI, question: str) -> dict[str, Any]:
    before = dict(llm.calls)
    with Poller(pod) as poller:
        status, took, body = request("POST", f"{pod.url()}/api/v1/query", {"query": question}, timeout=180)
    return {
        "status": status,
        "seconds": took,
        "provider_calls": {k: llm.calls[k] - before.get(k, 0) for k in ("embeddings", "chat")},
        "answer": {k: body.get(k) for k in ("total_results", "confidence_score", "response_type", "generated_response")}
        if isinstance(body, dict)
        else body,
        "while_running": poller.summary(),
    }


def metrics(pod: AgentPod, *prefixes: str) -> list[str]:
    _, text = pod.get("runtime", "/metrics")
    return [line for line in text.splitlines() if line.startswith(prefixes) and not line.endswith(" 0.0")]


def log_report(pod: AgentPod, secrets: list[str]) -> dict[str, Any]:
    lines = pod.log.read_text(encoding="utf-8", errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    wanted = re.compile(r"Cloning|Successfully cloned|adapter |serving |collection|commit tracking|Commit|stale", re.I)
    return {
        "lines": len(lines),
        "json_lines": len(records),
        "non_json_lines": [line for line in lines if not line.startswith("{")][:5],
        "lines_with_a_secret": sum(any(s in line for s in secrets) for line in lines),
        "errors": [f"{r['logger']}: {r['msg'][:200]}" for r in records if r["level"] in ("ERROR", "CRITICAL")][:10],
        "warnings": [f"{r['logger']}: {r['msg'][:200]}" for r in records if r["level"] == "WARNING"][:10],
        "stale_chunks": [r["msg"] for r in records if r["logger"] == "kga.runtime" and "stale chunks" in r["msg"]],
        "selected": [
            {k: r.get(k) for k in ("level", "logger", "msg", "request_id")}
            for r in records
            if wanted.search(r["msg"]) and r["logger"] != "kga.access"
        ][:25],
    }


def run(app: Path, env: str, root: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"app": str(app), "env": env}
    github = make_repository(root)
    os.environ["PATH"] = f"{git_wrapper(root)}{os.pathsep}{os.environ['PATH']}"
    llm = FakeOpenAI().start()
    with contextlib.ExitStack() as stack:
        stack.callback(llm.stop)
        redis = stack.enter_context(run_redis(env, root / "redis"))
        chroma = stack.enter_context(run_chroma(env, root / "chroma"))
        pods: dict[str, AgentPod] = {}
        startup: dict[str, float] = {}
        for tier in ("indexer", "query"):
            started = time.monotonic()
            pods[tier] = stack.enter_context(
                run_agent(env, tier, root / tier, redis=redis, chroma=chroma, llm_url=llm.base_url, app_dir=app)
            )
            startup[tier] = round(time.monotonic() - started, 2)
        indexer, query_pod = pods["indexer"], pods["query"]
        report["startup_seconds"] = startup
        report["pods"] = pods_report(pods)
        # The indexer's HOME (dist: /tmp, an emptyDir) sends github.com/ to the local repositories.
        home = Path(indexer.env["HOME"])
        (home / ".gitconfig").write_text(f'[url "file://{github}/"]\n\tinsteadOf = https://github.com/\n')
        report["index_incremental_first"] = index(indexer, incremental=True)
        report["index_incremental_again"] = index(indexer, incremental=True)
        push_change(root)
        report["index_incremental_after_a_push"] = index(indexer, incremental=True)
        report["chroma_after_the_push"] = chroma_report(chroma.client(), indexer.env["CHROMA_COLLECTION_NAME"])
        report["index_full"] = index(indexer, incremental=False)
        report["chroma_server"] = chroma_report(chroma.client(), indexer.env["CHROMA_COLLECTION_NAME"])
        # The app's embedded default would be ./chroma_db in a pod's working directory.
        report["chroma_db_dirs"] = [str(p) for p in root.rglob("chroma_db")]
        workdir = Path(indexer.pod.local(indexer.container, indexer.container["workingDir"]))
        commits = workdir / "indexed_commits.json"
        report["indexed_commits"] = json.loads(commits.read_text()) if commits.exists() else None
        report["temp_repo"] = sorted(str(p.relative_to(workdir)) for p in workdir.glob("temp_repo/*/*"))
        question = "What does greet return in the tiny-agent repository?"
        report["query_first"] = query(query_pod, llm, question)
        report["query_repeated"] = query(query_pod, llm, question)
        llm.chat_delay = 6
        report["query_slow_llm_6s"] = query(query_pod, llm, "Which function counts words?")
        llm.chat_delay = 0
        report["redis"] = redis_report(redis.client("app"))
        families = ("kga_cache_requests_total", "kga_queries_total", "kga_indexing_runs_total")
        families += ("kga_http_requests_total", "kga_http_requests_in_flight", "kga_event_loop_lag_seconds")
        report["metrics"] = {name: metrics(pod, *families) for name, pod in pods.items()}
        report["git"] = git_report(root / "git-argv.jsonl", indexer.env["GITHUB_TOKEN"])
        secrets = [v for k, v in indexer.env.items() if is_secret(k) and len(v) >= 6] + [redis.password("app")]
        report["logs"] = {name: log_report(pod, secrets) for name, pod in pods.items()}
    return report


def is_secret(name: str) -> bool:
    return name.endswith(("_API_KEY", "_TOKEN")) or "PASSWORD" in name or name == "REDIS_URL"


def chroma_report(client: Any, collection: str) -> dict[str, Any]:
    store = client.get_collection(collection)
    mine = store.get(where={"repository": "acme/tiny-agent"}, include=["metadatas", "documents"])
    return {
        "collections": sorted(c.name for c in client.list_collections()),
        "count": store.count(),
        "count_of_tiny_agent": len(mine["ids"]),
        "chunks_of_tiny_agent": sorted(
            f"{(meta or {}).get('file_path')}: {text[-60:]!r}"
            for meta, text in zip(mine["metadatas"], mine["documents"], strict=True)
        ),
    }


def redis_report(client: Any) -> dict[str, Any]:
    keys = sorted(client.scan_iter())
    prefixes = sorted({k.rsplit(":", 1)[0] for k in keys})
    return {
        "keys": len(keys),
        "by_prefix": {p: sum(k.rsplit(":", 1)[0] == p for k in keys) for p in prefixes},
        "ttl_of_one_key_per_prefix": {k.rsplit(":", 1)[0]: client.ttl(k) for k in keys},
    }


def git_report(log: Path, token: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {
        "commands": [" ".join(g["argv"]) for g in lines][:20],
        "commands_with_the_token": sum(token in " ".join(g["argv"]) for g in lines),
        "config_keys": sorted({k for g in lines for k in g["config_keys"]}),
    }


def pods_report(pods: dict[str, AgentPod]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, pod in pods.items():
        health = request("GET", f"{pod.url('http')}/health")
        live = request("GET", f"{pod.url('runtime')}/livez")
        ready: tuple[int, float, Any] = (0, 0.0, None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = request("GET", f"{pod.url('runtime')}/readyz")
            if ready[0] == 200:
                break
            time.sleep(0.5)
        status, text = pod.get("runtime", "/metrics")
        out[name] = {
            "args": pod.container["args"],
            "health": health[:2],
            "health_body_status": health[2].get("status") if isinstance(health[2], dict) else health[2],
            "livez": live,
            "readyz": ready,
            "metrics_status": status,
            "metrics_families": sorted({m for m in re.findall(r"^# TYPE (kga_\w+)", text, re.M)}),
            "env": {k: pod.env[k] for k in sorted(pod.env) if k.startswith(("KGA_", "CHROMA_", "DATABASE_TYPE"))},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", type=Path, help="checkout of the app at the pinned commit (main.py, src/)")
    parser.add_argument("--env", default="prod", help="dist/<env> whose pods run (default prod)")
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, volumes)")
    args = parser.parse_args()
    if not (args.app / "src" / "api" / "main.py").exists():
        parser.error(f"{args.app}: not a checkout of the app (no src/api/main.py)")
    root = Path(tempfile.mkdtemp(prefix="kga-real-app-"))
    try:
        report = run(args.app.resolve(), args.env, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report["workdir"] = str(root) if args.keep else None
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
