# Entry points; scripts/setup.sh makes each one work on a fresh machine.
SHELL := /bin/bash
export JSII_NODE := $(CURDIR)/.tools/jsii-node
# This checkout's constructs, even when the shared venv has another checkout installed in editable mode.
export PYTHONPATH := $(CURDIR)/constructs
export PATH := $(CURDIR)/.tools/node_modules/.bin:$(CURDIR)/.venv/bin:$(PATH)

.PHONY: synth test check lint bench cdk8s-synth schema drill cluster restore backups diff

# -O skips jsii's runtime type checks of every struct (a third of synth time); pydantic,
# the construct validations and the strict schema check still validate everything.
SYNTH := .venv/bin/python -O app.py
# Every target sets itself up first; `make SETUP=true ...` skips that (a checkout sharing another's venv).
SETUP := scripts/setup.sh
CDK8S_SYNTH := cdk8s synth --no-check-upgrade

## synth: set up, then synthesize every environment into dist/
synth:
	@$(SETUP) synth
	@$(SYNTH)

## test: set up the test toolchain, then run every test (schemas, scanners, servers, lint); the tests
## start while the Go-built tools still build, and those that need one wait for it
PYTEST := .venv/bin/python -m pytest
test:
	@$(if $(filter true,$(SETUP)),$(PYTEST),$(SETUP) test -- $(PYTEST))

## check: the fast gate: synth (schemas, CRDs, cross-references), then checkov, the analyzer and promtool, each timed
check:
	@$(SETUP) check
	@.venv/bin/python scripts/check.py

## cdk8s-synth: the same synthesis through the cdk8s CLI; quiet, ends with the same summary line as synth
cdk8s-synth:
	@$(SETUP) synth
	@log=$$(mktemp); summary=$$(mktemp); \
	if KGA_SUMMARY_FILE=$$summary $(CDK8S_SYNTH) >$$log 2>&1; then cat $$summary; rm -f $$log $$summary; \
	else cat $$log >&2; rm -f $$log $$summary; exit 1; fi

## lint: set up ruff and mypy, then run scripts/lint.sh (the tests run the same script)
lint:
	@$(SETUP) lint
	@scripts/lint.sh

## restore: print a restore Job: make restore ENV=prod STORE=chroma [BACKUP_ID=...] [FORCE=1] | kubectl apply -f -
restore:
	@$(SETUP) synth
	@$(SYNTH) restore "$(ENV)" "$(STORE)" $(if $(BACKUP_ID),--backup-id "$(BACKUP_ID)") $(if $(FORCE),--force)

## backups: print a read-only Job that lists backups: make backups ENV=prod STORE=chroma | kubectl apply -f -
backups:
	@$(SETUP) synth
	@$(SYNTH) backups "$(ENV)" "$(STORE)"

## diff: how the working tree's synth differs from the committed dist/, per object: make diff [ENV=prod]
## (make exits 0 no change, 2 changes or error; scripts/diff [ENV] keeps 0 no change, 1 changes, 2 error)
diff:
	@SETUP=$(SETUP) scripts/diff $(ENV)

## bench: performance ratios (see bench/README.md)
bench:
	@$(SETUP) test
	@.venv/bin/python bench/synth_ratio.py

## schema: regenerate environments/schema.json and docs/environment-reference.md from the environment model
schema:
	@.venv/bin/python -c "from kgstack.environment import json_schema; print(json_schema(), end='')" > environments/schema.json
	@.venv/bin/python -c "from kgstack.environment import markdown_reference as m; print(m(), end='')" > docs/environment-reference.md

## drill: zone-loss drill of ENV (default prod) on the local control plane; prints the table
drill:
	@$(SETUP) test
	@.venv/bin/python tests/control_plane.py drill $(or $(ENV),prod)

## cluster: a real node on this host (root) running dist/ENV (default dev), until Ctrl-C; prints its KUBECONFIG
cluster:
	@$(SETUP) test
	@.venv/bin/python tests/real_node.py cluster $(or $(ENV),dev)
