"""How large a Chroma store and its kgbackup dump are, per record: the facts the backup's scratch volume
and the restore's watch time are derived from (kgstack.backup_schedule).

For each size, loads the records (dimension 1536, as bench/backup_throughput.py does) into a fresh
loopback ``chroma run``, stops it and measures its data directory, then runs ``kgbackup backup chroma``
into a ``file://`` target and measures the gzip dump. Prints one JSON line per size, then the marginal
bytes per record of each (the difference between the two largest sizes) and their ratio.

    PYTHONPATH=docker/backup nice .venv/bin/python bench/chroma_footprint.py --sizes 5000,20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backup_throughput as bench


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(work: Path, records: int, dim: int) -> dict[str, int]:
    data = work / f"chroma-{records}"
    proc, port = bench.start_chroma(data)
    try:
        bench.load_chroma(port, records, dim)
    finally:
        bench.stop(proc)
    disk = du(data)
    proc, port = bench.start_chroma(data)
    target, spool = work / f"target-{records}", work / f"spool-{records}"
    target.mkdir()
    spool.mkdir()
    try:
        argv = [sys.executable, "-m", "kgbackup", "backup", "chroma", "--target", f"file://{target}"]
        argv += ["--work-dir", str(spool), "--chroma-port", str(port)]
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    finally:
        bench.stop(proc)
    dump = sum(p.stat().st_size for p in target.rglob("*.gz"))
    return {"records": records, "data_dir_bytes": disk, "dump_gz_bytes": dump}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--dim", type=int, default=1536)
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.sizes.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kgb-footprint-") as tmp:
        for n in sizes:
            row = measure(Path(tmp), n, args.dim)
            rows.append(row)
            print(json.dumps({**row, "dump_over_data_dir": round(row["dump_gz_bytes"] / row["data_dir_bytes"], 3)}))
    if len(rows) >= 2:
        small, large = rows[-2], rows[-1]
        added = large["records"] - small["records"]
        data = (large["data_dir_bytes"] - small["data_dir_bytes"]) / added
        dump = (large["dump_gz_bytes"] - small["dump_gz_bytes"]) / added
        print(
            json.dumps(
                {
                    "marginal_data_dir_bytes_per_record": round(data),
                    "marginal_dump_bytes_per_record": round(dump),
                    "marginal_ratio": round(dump / data, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
