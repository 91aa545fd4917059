#!/usr/bin/env python3
"""How the working tree's synth differs from the committed ``dist/``, per object.

    scripts/synth_diff.py [ENV]      (scripts/diff ENV, which sets up first; make diff ENV=prod)

Synthesizes the working tree into a scratch folder (``dist/`` is not touched) and
compares each object with ``dist/<env>/`` as committed in ``HEAD``: one line per added,
removed or changed object (``Deployment/kga-prod-query``), then a diff of each changed
object's YAML. Exit codes: 0 no difference, 1 differences, 2 the synth failed (``make diff`` turns
1 into 2, as make does with any failure; scripts/diff keeps them).
Standard library only (plus the app it runs).
"""

from __future__ import annotations

import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def committed(env: str) -> dict[str, str]:
    """``{file name: YAML}`` of ``dist/<env>/`` in HEAD."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", "HEAD", f"dist/{env}/"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    listing = [path for path in listing if path.endswith(".yaml")]  # a cluster's platform/ is its own folder
    return {
        Path(path).name: subprocess.run(
            ["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        for path in listing
    }


def object_name(text: str, file_name: str) -> str:
    """``Kind/name`` from the first ``kind:`` and ``name:`` lines (no YAML parser needed)."""
    kind = next((line[6:] for line in text.splitlines() if line.startswith("kind: ")), "")
    name = next((line.strip()[6:] for line in text.splitlines() if line.startswith("  name: ")), "")
    return f"{kind}/{name}" if kind and name else file_name


def compare(env: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    out: list[str] = []
    changed = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        shown = object_name(new or old or "", name)
        if old is None:
            out.append(f"  + added    {shown}")
        elif new is None:
            out.append(f"  - removed  {shown}")
        else:
            lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=2))
            out.append(f"  ~ changed  {shown} ({sum(1 for line in lines[2:] if line[:1] in '+-')} lines)")
            changed.append((shown, name, lines))
    if not out:
        return [f"{env}: no change"]
    header = [f"{env}: {len(out)} object(s) differ from the committed dist/{env}/"]
    details = []
    for shown, name, lines in changed:
        details += ["", f"--- {shown} (dist/{env}/{name})", *lines[2:]]
    return header + out + details


def main(argv: list[str]) -> int:
    only = argv[0] if argv and argv[0] else None
    with tempfile.TemporaryDirectory(prefix="kga-diff-") as scratch:
        outdir = Path(scratch) / "dist"
        result = subprocess.run(
            [
                sys.executable,
                "-O",
                str(ROOT / "app.py"),
                "--outdir",
                str(outdir),
                "--docs",
                str(Path(scratch) / "docs"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            return 2
        # Every folder of files: dist/<env>/, and each cluster's dist/argocd/<cluster>/[platform/].
        envs = sorted({p.parent.relative_to(outdir).as_posix() for p in outdir.rglob("*.yaml")})
        committed_files = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", "HEAD", "dist/"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        envs = sorted(set(envs) | {Path(p).parent.relative_to("dist").as_posix() for p in committed_files})
        if only is not None:
            if only not in envs:
                print(f"no environment {only!r}; known: {', '.join(envs)}", file=sys.stderr)
                return 2
            envs = [only]
        lines: list[str] = []
        differs = False
        for env in envs:
            folder = outdir / env
            after = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.yaml")} if folder.is_dir() else {}
            before = committed(env)
            differs |= before != after
            lines += compare(env, before, after)
    print("\n".join(lines))
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
