# Entry points for developers and CI. `make test` is exactly what CI runs (via .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3

.PHONY: help run test lint fmt build bench bench-coldstart clean-local

help:
	@echo "make run          run the whole pipeline locally (embedded store and queue, no AWS)"
	@echo "make test         fmt check, clippy, tests against moto, cfn-lint, template rules"
	@echo "make lint         fmt check, clippy, cfn-lint, template rules (no tests)"
	@echo "make fmt          format the workspace"
	@echo "make build        build the Lambda binaries with cargo-lambda"
	@echo "make bench        run the performance benchmarks"
	@echo "make bench-coldstart  cold start, size and memory of every function beside a hello-world floor"
	@echo "make clean-local  delete the local runner's state (.local-data/)"

run:
	$(CARGO) run --release -p enerflo-sync-local

# A script rather than recipe lines, so one shell owns the trap that always stops moto.
test:
	bash infra/scripts/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	cfn-lint template.yaml
	$(PYTHON) infra/scripts/check_template.py template.yaml

fmt:
	$(CARGO) fmt --all

# `sam build` runs cargo-lambda too; the cargo compiler avoids needing zig on this machine.
build:
	@if $(CARGO) lambda --version >/dev/null 2>&1; then \
	  $(CARGO) lambda build --release --compiler cargo; \
	  echo "Binaries are in target/lambda/. To deploy: CARGO_LAMBDA_COMPILER=cargo sam build && sam deploy --guided"; \
	else \
	  echo "cargo-lambda is not installed: python3 -m pip install cargo-lambda (or see https://www.cargo-lambda.info)." >&2; \
	  echo "Then run 'make build', or 'CARGO_LAMBDA_COMPILER=cargo sam build' to package for deploy." >&2; \
	  exit 1; \
	fi

bench:
	$(CARGO) bench -p enerflo-sync

# Release builds of the floor and every function, then the Lambda Runtime API emulator over each
# (bench/coldstart/run.py; ROUNDS=11 for steadier medians). Slow: not part of `make test`.
ROUNDS ?= 7
bench-coldstart:
	$(PYTHON) bench/coldstart/run.py --rounds $(ROUNDS)

clean-local:
	rm -rf .local-data
