"""The floor set by the libraries the stack must load: the same imports, an empty App."""

import importlib
import sys

import cdk8s

for module in (
    "cdk8s_plus_27",
    "jsonschema",
    "grafana_foundation_sdk.builders.dashboard",
    "kubernetes_validate",
    "pydantic",
):
    importlib.import_module(module)

cdk8s.App(outdir=sys.argv[1]).synth()
