#!/usr/bin/env python3
"""Vendor Azure's published ARM schema of Microsoft.ContainerInstance into tests/fixtures/arm-schemas/.

The ACI target's template (dist/<env>/aci/azuredeploy.json) is validated against it in
tests/test_aci_template.py: the Azure SDK's models do not check required fields, the schema does.
Taken from the public Azure/azure-resource-manager-schemas repository at ``COMMIT``, unchanged,
with the common definitions it references; ``SOURCE.json`` records where each file came from.
GitHub is not reachable from every machine, so the script reads a local clone:

    git clone https://github.com/Azure/azure-resource-manager-schemas /tmp/arm-schemas
    .venv/bin/python scripts/fetch_arm_schemas.py /tmp/arm-schemas/.git
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "arm-schemas"
REPOSITORY = "https://github.com/Azure/azure-resource-manager-schemas"
COMMIT = "a1454431151fd3e9c1b254b1a11d00c2d8474611"
API_VERSION = "2023-05-01"
FILES = {
    f"schemas/{API_VERSION}/Microsoft.ContainerInstance.json": "Microsoft.ContainerInstance.json",
    "schemas/common/definitions.json": "common-definitions.json",
}


def main(git_dir: str) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for path, name in FILES.items():
        text = subprocess.run(
            ["git", "--git-dir", git_dir, "show", f"{COMMIT}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        json.loads(text)  # a schema, not an error page
        (OUT / name).write_text(text, encoding="utf-8")
    source = {"repository": REPOSITORY, "commit": COMMIT, "files": FILES}
    (OUT / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".git"))
