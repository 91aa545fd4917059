"""Pick a Node.js that jsii supports before cdk8s starts its runtime.

jsii runs the cdk8s library in a Node process chosen by ``JSII_NODE`` (default:
``node`` on PATH). On an end-of-life Node it prints a 96-line banner on every
run, so ``import kgstack`` picks a supported one when it can find it, and
otherwise says in one line how to provide it. This is import-time set-up of the
process, not construct behaviour: constructs never read the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SUPPORTED_MAJORS = (22, 24)
"""Node releases jsii supports (its runtime warns on any other)."""

NPM_NODE = Path(".tools") / "node_modules" / ".bin" / "node"
"""Where ``npm install --prefix .tools node@22`` puts Node (scripts/setup.sh links it as ``.tools/jsii-node``)."""

_HINT = (
    "kgstack: jsii needs Node.js 22 or 24 and found none; set JSII_NODE=/path/to/node, or run "
    "`scripts/setup.sh synth` (or `npm install --prefix .tools node@22`) in this folder: kgstack finds "
    f".tools/jsii-node and {NPM_NODE} by itself"
)


_LATE = (
    "kgstack: jsii started before kgstack on an unsupported Node.js; import kgstack before cdk8s, "
    "or set JSII_NODE to a Node 22 or 24"
)


def _major(node: str) -> int:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def _candidates() -> tuple[list[str], str | None]:
    """The project's Node (``.tools/jsii-node``, else npm's in ``.tools``, of the cwd or of this checkout),
    and ``node`` on PATH."""
    places = [Path.cwd(), Path(__file__).resolve().parents[2]]
    found = [str(place / ".tools" / "jsii-node") for place in places if (place / ".tools" / "jsii-node").exists()]
    # Else a Node installed as the hint says, without the set-up that links it (checked: it may be any version).
    found = found or [
        str(place / NPM_NODE)
        for place in places
        if (place / NPM_NODE).exists() and _major(str(place / NPM_NODE)) in SUPPORTED_MAJORS
    ]
    return found, shutil.which("node")


def use_supported_node() -> None:
    """Set ``JSII_NODE`` to a supported Node unless the caller chose one or jsii already runs."""
    if os.environ.get("JSII_NODE"):
        return
    if "jsii" in sys.modules:
        # cdk8s was imported first: jsii already runs on PATH's node; say so once if that one is unsupported.
        on_path = shutil.which("node")
        if on_path and _major(on_path) not in SUPPORTED_MAJORS:
            print(_LATE, file=sys.stderr)
        return
    project, on_path = _candidates()
    if project:
        # scripts/setup.sh links only a supported Node there: no need to start it to ask.
        os.environ["JSII_NODE"] = project[0]
        return
    if on_path and _major(on_path) in SUPPORTED_MAJORS:
        os.environ["JSII_NODE"] = on_path
        return
    print(_HINT, file=sys.stderr)
