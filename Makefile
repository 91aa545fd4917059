# Entry points; scripts/setup.sh makes each one work on a fresh machine.
SHELL := /bin/bash
export JSII_NODE := $(CURDIR)/.tools/jsii-node
export PATH := $(CURDIR)/.tools/node_modules/.bin:$(CURDIR)/.venv/bin:$(PATH)

.PHONY: synth test lint bench cdk8s-synth schema drill

# -O skips jsii's runtime type checks of every struct (a third of synth time); pydantic,
# the construct validations and the strict schema check still validate everything.
SYNTH := .venv/bin/python -O app.py

## synth: set up, then synthesize every environment into dist/
synth:
	@scripts/setup.sh synth
	@$(SYNTH)

## test: set up the test toolchain, then run every test (schemas, scanners, servers, lint)
test:
	@scripts/setup.sh test
	@.venv/bin/python -m pytest

## cdk8s-synth: the same synthesis through the cdk8s CLI
cdk8s-synth:
	@scripts/setup.sh synth
	@cdk8s synth --no-check-upgrade

## lint: ruff and mypy (also run by the tests)
lint:
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

## bench: performance ratios (see bench/README.md)
bench:
	@scripts/setup.sh test
	@.venv/bin/python bench/synth_ratio.py

## schema: regenerate environments/schema.json and docs/environment-reference.md from the environment model
schema:
	@.venv/bin/python -c "from kgstack.environment import json_schema; print(json_schema(), end='')" > environments/schema.json
	@.venv/bin/python -c "from kgstack.environment import markdown_reference as m; print(m(), end='')" > docs/environment-reference.md

## drill: zone-loss drill of ENV (default prod) on the local control plane; prints the table
drill:
	@scripts/setup.sh test
	@.venv/bin/python tests/control_plane.py drill $(or $(ENV),prod)
