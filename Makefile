# Entry points for developers and CI. `make test` is exactly what CI runs (via .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3

.PHONY: help run test lint fmt build check-sam-build bench bench-load bench-coldstart clean-local

help:
	@echo "make run          run the whole pipeline locally (embedded store and queue, no AWS)"
	@echo "make test         fmt check, clippy, tests against moto, cfn-lint, template rules"
	@echo "make lint         fmt check, clippy, cfn-lint, template rules (no tests)"
	@echo "make fmt          format the workspace"
	@echo "make build        the Lambda binaries (ARCH=x86_64|arm64), glibc 2.34, checked"
	@echo "make check-sam-build  check what sam build packaged (ARCH=x86_64|arm64)"
	@echo "make bench        run the performance benchmarks"
	@echo "make bench-load   the local runner under paced webhooks: events/s, webhook -> CRM p50/p99"
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

# The Lambda binaries, for the template's Architecture (ARCH=x86_64 or ARCH=arm64), linked by
# cargo-lambda's zig against glibc 2.34 (provided.al2023's), whatever glibc this host has; then
# checked (infra/scripts/check_glibc.py). `pip install cargo-lambda` brings zig. Output:
# target/lambda/<function>/bootstrap.
ARCH ?= x86_64
LAMBDA_TARGET_x86_64 := x86_64-unknown-linux-gnu.2.34
LAMBDA_TARGET_arm64 := aarch64-unknown-linux-gnu.2.34
FUNCTIONS := $(sort $(notdir $(wildcard functions/*)))
LAMBDA_DIR := $(or $(CARGO_TARGET_DIR),target)/lambda

build:
	@if [[ -z "$(LAMBDA_TARGET_$(ARCH))" ]]; then \
	  echo "ARCH must be x86_64 or arm64 (the template's Architecture), not '$(ARCH)'" >&2; exit 1; \
	fi
	@if ! $(CARGO) lambda --version >/dev/null 2>&1; then \
	  echo "cargo-lambda is not installed: python3 -m pip install cargo-lambda (it brings zig)." >&2; \
	  exit 1; \
	fi
	$(CARGO) lambda build --release --locked --compiler cargo-zigbuild \
	  --target $(LAMBDA_TARGET_$(ARCH)) $(addprefix -p ,$(FUNCTIONS))
	$(PYTHON) infra/scripts/check_glibc.py --arch $(ARCH) \
	  $(foreach f,$(FUNCTIONS),$(LAMBDA_DIR)/$(f)/bootstrap)

# After `sam build`: the binaries SAM packaged, checked the same way (glibc, and ARCH = the
# template's Architecture).
check-sam-build:
	$(PYTHON) infra/scripts/check_glibc.py --arch $(ARCH) .aws-sam/build/*/bootstrap

bench:
	$(CARGO) bench -p enerflo-sync

# The local runner as its own (release) process, a fake CRM answering at once, paced webhooks over
# HTTP into one stage, then all six (tests/benches/load.rs; BENCH_SECONDS, BENCH_RUNS,
# WORKERS_PER_STAGE). Slow: not part of `make test`.
bench-load:
	$(CARGO) bench -p sync-tests --bench load

# Release builds of the floor and every function, then the Lambda Runtime API emulator over each
# (bench/coldstart/run.py; ROUNDS=11 for steadier medians). Slow: not part of `make test`.
ROUNDS ?= 7
bench-coldstart:
	$(PYTHON) bench/coldstart/run.py --rounds $(ROUNDS)

clean-local:
	rm -rf .local-data
