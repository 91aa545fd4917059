"""Benchmark kgbackup against real local servers: Redis keys and Chroma vectors.

For each size (default 20k and 100k records), starts a loopback redis-server
and ``chroma run``, loads the records, then times ``backup`` and ``restore
--force`` (each in a child process, so the peak RSS is the tool's own) several
times. It prints one JSON line per run, then the medians, the restore/backup
ratio per size and the peak-RSS ratio of the largest size to the smallest, all
from this one run. Chroma rows also give the server's CPU seconds, which shows
where a restore's time goes (the server building its HNSW index).

Before the Chroma runs, a sweep restores a small dump with several upsert batch
sizes and worker counts and prints records/s for each; the timed runs use the
fastest, and kgbackup's defaults (``--chroma-upsert-batch``,
``--chroma-upsert-workers``) come from it.

    PYTHONPATH=docker/backup nice .venv/bin/python bench/backup_throughput.py \
        --sizes 20000,100000 --runs 5 --chroma-runs 3 --cache /var/tmp/kgb-bench

Loading 100k vectors of dimension 1536 into Chroma takes minutes: ``--cache``
keeps each size's Chroma data between invocations (the restores rewrite the
same records, so the data stays valid).

``--baseline DIR`` times another kgbackup tree too, run for run alternating with
this one on the same server and data (paired, so machine load hits both alike),
and prints each op's median ratio this ÷ baseline. For the tool as of a commit:

    git archive <commit> docker/backup | tar -x -C /tmp/kgb-old
    ... bench/backup_throughput.py --stores chroma --baseline /tmp/kgb-old/docker/backup
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BACKUP_DIR = Path(__file__).resolve().parent.parent / "docker" / "backup"
PASSWORD = "bench-pw"
COLLECTION = "bench"
# (records per upsert, upserts in flight) tried by the sweep.
SWEEP = [(100, 2), (250, 1), (250, 2), (250, 4), (1000, 2)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:  # chroma run can sit in a long index write
        proc.kill()
        proc.wait()


def wait(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    port = free_port()
    conf = f"port {port}\nbind 127.0.0.1\nsave ''\nrequirepass {PASSWORD}\nrepl-diskless-sync-delay 0\ndir {work}\n"
    proc = subprocess.Popen(["redis-server", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(conf.encode())
    proc.stdin.close()
    wait(lambda: redis.Redis(port=port, password=PASSWORD).ping(), "redis-server")
    return proc, port


def start_chroma(path: Path) -> tuple[subprocess.Popen[bytes], int]:
    import chromadb

    port = free_port()
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    proc = subprocess.Popen(
        [chroma, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    wait(lambda: chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat(), "chroma")
    return proc, port


def load_redis(port: int, n: int) -> None:
    import redis

    r = redis.Redis(port=port, password=PASSWORD)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        if i % 5 == 0:
            pipe.hset(f"h:{i}", mapping={"a": i, "b": "x" * 50})
        else:
            pipe.set(f"s:{i}", "v" * 100, ex=86_400 if i % 3 == 0 else None)
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()


def chroma_count(port: int) -> int:
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    try:
        return int(client.get_collection(COLLECTION).count())
    except Exception:
        return -1


def load_chroma(port: int, n: int, dim: int) -> None:
    """``n`` records in one cosine collection; two writers so the server indexes on both cores."""
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    if COLLECTION in [c.name for c in client.list_collections()]:
        client.delete_collection(COLLECTION)
    col = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    batch = 1_000

    def add(start: int) -> None:
        size = min(batch, n - start)
        col.add(
            ids=[f"v{start + i}" for i in range(size)],
            embeddings=np.random.default_rng(start).random((size, dim), dtype=np.float32),
            documents=[f"chunk {start + i} " + "lorem ipsum " * 20 for i in range(size)],
            metadatas=[{"repo": "bench", "n": start + i} for i in range(size)],
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(add, range(0, n, batch)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Runs the CLI, then reports its own peak RSS and CPU on stderr's last line. The
# throwaway redis-server of a Redis restore is a grandchild and not included.
_CHILD = (
    "import resource, sys\n"
    "from kgbackup.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "u = resource.getrusage(resource.RUSAGE_SELF)\n"
    "sys.stderr.write('\\nrusage=%d,%.3f\\n' % (u.ru_maxrss, u.ru_utime + u.ru_stime))\n"
    "sys.exit(code)\n"
)


def run_tool(*argv: str, server_pid: int | None = None, tool: Path = BACKUP_DIR) -> dict[str, float]:
    """One CLI run in a child process: wall seconds, the child's peak RSS and CPU, the server's CPU."""
    env = {**os.environ, "PYTHONPATH": str(tool), "REDIS_PASSWORD": PASSWORD}
    server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"kgbackup {' '.join(argv)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    maxrss_kib, cpu = proc.stderr.strip().splitlines()[-1].split("=")[1].split(",")
    out = {"s": round(seconds, 2), "rss_mib": round(int(maxrss_kib) / 1024, 1), "tool_cpu_s": round(float(cpu), 2)}
    if server_pid:
        out["server_cpu_s"] = round(cpu_seconds(server_pid) - server_cpu, 2)
    return out


def _cpu(run: dict[str, float]) -> float:
    return run["tool_cpu_s"] + run.get("server_cpu_s", 0.0)


def bench_runs(
    store: str, records: int, runs: int, store_args: list[str], server_pid: int | None, *, baseline: Path | None = None
) -> dict[str, Any]:
    tools = {"": BACKUP_DIR, **({"baseline_": baseline} if baseline else {})}
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        # The 1-minute load average as the run starts: on a shared machine, how contended it was.
        row: dict[str, Any] = {"store": store, "records": records, "run": run + 1, "load1": os.getloadavg()[0]}
        for prefix, tool in tools.items():  # paired: each run times both trees back to back
            target = f"file://{tempfile.mkdtemp(prefix=f'kgb-bench-{store}-')}"
            try:
                backup = run_tool("backup", store, "--target", target, *store_args, server_pid=server_pid, tool=tool)
                restore = run_tool("restore", store, "--latest", "--force", "--target", target, *store_args,
                                   server_pid=server_pid, tool=tool)  # fmt: skip
            finally:
                shutil.rmtree(target.removeprefix("file://"), ignore_errors=True)
            row |= {f"{prefix}backup": backup, f"{prefix}restore": restore,
                    f"{prefix}restore_to_backup": round(restore["s"] / backup["s"], 2),
                    # CPU (tool + server) moves less with the machine's load than wall time does.
                    f"{prefix}restore_to_backup_cpu": round(_cpu(restore) / _cpu(backup), 2)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)

    def med(op: str, key: str) -> float:
        return round(statistics.median(r[op][key] for r in rows), 2)

    loads = sorted(r["load1"] for r in rows)
    load1 = {"min": loads[0], "median": statistics.median(loads), "max": loads[-1]}
    summary: dict[str, Any] = {"store": store, "records": records, "runs": runs, "load1": load1}
    for prefix in tools:
        for op in (f"{prefix}backup", f"{prefix}restore"):
            for key in rows[0][op]:
                summary[f"{op}_{key}_median"] = med(op, key)
        for ratio in ("restore_to_backup", "restore_to_backup_cpu"):
            summary[f"{prefix}{ratio}_median"] = round(statistics.median(r[f"{prefix}{ratio}"] for r in rows), 2)
    summary["records_per_s"] = {op: round(records / summary[f"{op}_s_median"]) for op in ("backup", "restore")}
    if baseline:
        summary["over_baseline_median"] = {
            op: round(statistics.median(r[op]["s"] / r[f"baseline_{op}"]["s"] for r in rows), 2)
            for op in ("backup", "restore")
        }
    return summary


def sweep_chroma(work: Path, records: int, dim: int) -> dict[str, Any]:
    """Restore one small dump with each (batch, workers) pair; records/s for each."""
    proc, port = start_chroma(work / "chroma-sweep")
    target = f"file://{work}/sweep-backups"
    try:
        load_chroma(port, records, dim)
        base = ["--target", target, "--chroma-host", "127.0.0.1", "--chroma-port", str(port)]
        run_tool("backup", "chroma", *base)
        results = []
        for batch, workers in SWEEP:
            r = run_tool("restore", "chroma", "--latest", "--force", *base, "--chroma-upsert-batch", str(batch),
                         "--chroma-upsert-workers", str(workers), server_pid=proc.pid)  # fmt: skip
            results.append({"batch": batch, "workers": workers, "records_per_s": round(records / r["s"]), **r})
            print(json.dumps({"sweep": results[-1]}), flush=True)
    finally:
        stop(proc)
    best = max(results, key=lambda r: r["records_per_s"])
    return {"sweep_records": records, "best": {"batch": best["batch"], "workers": best["workers"]}}


def run_redis(sizes: list[int], runs: int, work: Path) -> list[dict[str, Any]]:
    summaries = []
    for n in sizes:
        proc, port = start_redis(work)
        try:
            load_redis(port, n)
            summaries.append(bench_runs("redis", n, runs, ["--redis-url", f"redis://127.0.0.1:{port}/0"], proc.pid))
            print(json.dumps(summaries[-1]), flush=True)
        finally:
            stop(proc)
    return summaries


def run_chroma(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    tuning: list[str] = []
    if args.sweep_records:
        sweep = sweep_chroma(work, args.sweep_records, args.dim)
        print(json.dumps(sweep), flush=True)
        best = sweep["best"]
        # The timed runs use the sweep's winner; kgbackup's defaults are set from it.
        tuning = ["--chroma-upsert-batch", str(best["batch"]), "--chroma-upsert-workers", str(best["workers"])]
    summaries = []
    for n in sorted(int(n) for n in (args.chroma_sizes or args.sizes).split(",")):
        proc, port = start_chroma((args.cache or work) / f"chroma-{n}-{args.dim}")
        try:
            if chroma_count(port) != n:
                t0 = time.monotonic()
                load_chroma(port, n, args.dim)
                print(json.dumps({"chroma_load": n, "s": round(time.monotonic() - t0, 1)}), flush=True)
            chroma_args = ["--chroma-host", "127.0.0.1", "--chroma-port", str(port), *tuning]
            summaries.append(bench_runs("chroma", n, args.chroma_runs, chroma_args, proc.pid, baseline=args.baseline))
            print(json.dumps(summaries[-1]), flush=True)
        finally:
            stop(proc)
    return summaries


def print_summary(summaries: list[dict[str, Any]]) -> None:
    print("# summary (medians of each size's runs, all measured in this invocation)")
    keys = ("store", "records", "runs", "backup_s_median", "restore_s_median", "restore_to_backup_median",
            "backup_rss_mib_median", "restore_rss_mib_median", "load1")  # fmt: skip
    for row in summaries:
        extra = ("restore_to_backup_cpu_median", "baseline_restore_to_backup_median",
                 "baseline_restore_to_backup_cpu_median", "over_baseline_median")  # fmt: skip
        print(json.dumps({k: row[k] for k in (*keys, *extra) if k in row}))
    for store in ("redis", "chroma"):
        rows = {r["records"]: r for r in summaries if r["store"] == store}
        if len(rows) >= 2:
            lo, hi = rows[min(rows)], rows[max(rows)]
            ratios = {
                op: round(hi[f"{op}_rss_mib_median"] / lo[f"{op}_rss_mib_median"], 3) for op in ("backup", "restore")
            }
            print(json.dumps({"store": store, f"peak_rss_{max(rows)}_over_{min(rows)}": ratios}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000", help="record counts, comma-separated")
    parser.add_argument("--chroma-sizes", help="record counts for Chroma (default: --sizes)")
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--stores", default="redis,chroma")
    parser.add_argument("--runs", type=int, default=5, help="backup+restore runs per size (Redis)")
    parser.add_argument("--chroma-runs", type=int, default=3, help="runs per size for Chroma (slow at 100k)")
    parser.add_argument("--sweep-records", type=int, default=3000, help="0 skips the upsert sweep")
    parser.add_argument("--cache", type=Path, help="keep loaded Chroma data here between invocations")
    parser.add_argument("--baseline", type=Path, help="another kgbackup tree (PYTHONPATH) to time alongside (Chroma)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kgb-bench-"))
    summaries: list[dict[str, Any]] = []
    try:
        if "redis" in args.stores:
            summaries += run_redis(sorted(int(n) for n in args.sizes.split(",")), args.runs, work)
        if "chroma" in args.stores:
            summaries += run_chroma(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_summary(summaries)


if __name__ == "__main__":
    main()
