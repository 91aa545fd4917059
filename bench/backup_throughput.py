"""Benchmark kgbackup against real local servers: Redis keys and Chroma vectors.

Starts a loopback redis-server and ``chroma run``, loads N records into each,
then times ``backup`` and ``restore --force`` (each in a child process, so the
peak RSS reported is the tool's own) and prints records/s and the ratios.

    PYTHONPATH=docker/backup python bench/backup_throughput.py --records 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKUP_DIR = Path(__file__).resolve().parent.parent / "docker" / "backup"
PASSWORD = "bench-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def start_chroma(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    import chromadb

    port = free_port()
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    proc = subprocess.Popen(
        [chroma, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(work / "chroma")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


def load_chroma(port: int, n: int, dim: int) -> None:
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    col = client.create_collection("bench", metadata={"hnsw:space": "cosine"}, embedding_function=None)
    rng = np.random.default_rng(0)
    batch = 2_000
    for start in range(0, n, batch):
        size = min(batch, n - start)
        col.add(
            ids=[f"v{start + i}" for i in range(size)],
            embeddings=rng.random((size, dim), dtype=np.float32),
            documents=[f"chunk {start + i} " + "lorem ipsum " * 20 for i in range(size)],
            metadatas=[{"repo": "bench", "n": start + i} for i in range(size)],
        )


# Runs the CLI, then reports its own peak RSS on stderr's last line. The
# throwaway redis-server of a Redis restore is a grandchild and not included.
_CHILD = (
    "import resource, sys\n"
    "from kgbackup.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stderr.write('\\nmaxrss_kib=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def run_tool(*argv: str) -> dict[str, float]:
    """One CLI run in a child process; returns wall seconds and the child's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(BACKUP_DIR), "REDIS_PASSWORD": PASSWORD}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"kgbackup {' '.join(argv)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1].split("=")[1])
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024}


def bench_store(store: str, records: int, store_args: list[str], target: str) -> dict[str, Any]:
    backup = run_tool("backup", store, "--target", target, *store_args)
    restore = run_tool("restore", store, "--latest", "--force", "--target", target, *store_args)
    dump = next(Path(target.removeprefix("file://"), store).rglob("dump.*.gz"))
    return {
        "store": store,
        "records": records,
        "dump_mib": round(dump.stat().st_size / 2**20, 1),
        "backup_s": round(backup["seconds"], 2),
        "backup_records_per_s": round(records / backup["seconds"]),
        "backup_peak_rss_mib": round(backup["peak_rss_mib"], 1),
        "restore_s": round(restore["seconds"], 2),
        "restore_records_per_s": round(records / restore["seconds"]),
        "restore_peak_rss_mib": round(restore["peak_rss_mib"], 1),
        "restore_to_backup_ratio": round(restore["seconds"] / backup["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--stores", default="redis,chroma")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kgb-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    results = []
    try:
        if "redis" in args.stores:
            proc, port = start_redis(work)
            procs.append(proc)
            load_redis(port, args.records)
            results.append(bench_store("redis", args.records, ["--redis-url", f"redis://127.0.0.1:{port}/0"],
                                       f"file://{work}/backups"))  # fmt: skip
        if "chroma" in args.stores:
            proc, port = start_chroma(work)
            procs.append(proc)
            t0 = time.monotonic()
            load_chroma(port, args.records, args.dim)
            print(json.dumps({"chroma_load_s": round(time.monotonic() - t0, 1)}), flush=True)
            chroma_args = ["--chroma-host", "127.0.0.1", "--chroma-port", str(port)]
            results.append(bench_store("chroma", args.records, chroma_args, f"file://{work}/backups"))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for row in results:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
