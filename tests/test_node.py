"""kgstack._node: the Node that jsii runs on, and the hint when there is none."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def pick_node(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """_node.py alone (importing kgstack would start jsii), run in ``tmp_path`` with only an old node on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "node").write_text("#!/bin/sh\necho v20.20.2\n")
    (bin_dir / "node").chmod(0o755)
    lib = tmp_path / "lib" / "kgstack"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "_node.py").write_text((ROOT / "constructs" / "kgstack" / "_node.py").read_text())
    code = (
        "import importlib.util, os\n"
        f"spec = importlib.util.spec_from_file_location('n', {str(lib / '_node.py')!r})\n"
        "n = importlib.util.module_from_spec(spec); spec.loader.exec_module(n)\n"
        "n.use_supported_node(); print(os.environ.get('JSII_NODE'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JSII_NODE"} | {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)


def test_following_the_hint_is_enough(tmp_path: Path) -> None:
    """Issue 21: the hint's `npm install --prefix .tools node@22` put Node where kgstack did not look."""
    first = pick_node(tmp_path)
    assert first.stdout == "None\n"
    (hint,) = first.stderr.splitlines()
    (prefix,) = re.findall(r"`npm install --prefix (\S+) node@22`", hint)
    # What that npm command leaves: node_modules/.bin/node under the prefix.
    node = tmp_path / prefix / "node_modules" / ".bin" / "node"
    node.parent.mkdir(parents=True)
    node.write_text("#!/bin/sh\necho v22.23.3\n")
    node.chmod(0o755)
    second = pick_node(tmp_path)
    assert second.stderr == ""
    assert second.stdout == f"{node}\n"


def test_an_old_node_where_npm_puts_it_is_not_taken(tmp_path: Path) -> None:
    node = tmp_path / ".tools" / "node_modules" / ".bin" / "node"
    node.parent.mkdir(parents=True)
    node.write_text("#!/bin/sh\necho v20.20.2\n")
    node.chmod(0o755)
    result = pick_node(tmp_path)
    assert result.stdout == "None\n"
    assert "JSII_NODE" in result.stderr


def test_the_hint_names_what_set_up_links() -> None:
    from kgstack import _node

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'ln -sfn "$PWD/.tools/node_modules/.bin/node" .tools/jsii-node' in setup
    assert str(_node.NPM_NODE) == ".tools/node_modules/.bin/node"
    assert "scripts/setup.sh synth" in _node._HINT
