#!/usr/bin/env bash
# Everything `make test` (and CI through .ci/run) checks, in order, failing on the first problem:
# formatting, clippy, the function binaries (debug), the test suite against a moto server this
# script starts and always stops, the glibc check of those binaries, cfn-lint, and the
# repository's own template rules (including a negative fixture that must fail).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

MOTO="$ROOT/infra/scripts/moto.sh"
CHECK="$ROOT/infra/scripts/check_template.py"
BAD_TEMPLATE="infra/scripts/bad-template.yaml"
GLIBC="$ROOT/infra/scripts/check_glibc.py"
GLIBC_FIXTURES="infra/scripts/fixtures/glibc"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# One failure per rule is what the negative fixture promises (see its header).
EXPECTED_RULES=(iam-wildcard sqs-visibility queue-dlq batch-failures noecho access-log-path function-role
  role-scope stage-registry alarm-actions alarm-coverage function-logging architecture resource-names
  dashboard secret-pattern)

step() {
  printf '\n==> %s\n' "$*"
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every function's debug binary, before the tests: the Lambda-path tests run them
# (tests/tests/e2e/lambda_path.rs finds them in $TARGET_DIR/debug), and the glibc check below
# reads them. One build either way.
step "function binaries (debug)"
functions=()
for dir in functions/*/; do
  functions+=("$(basename "$dir")")
done
package_args=()
for name in "${functions[@]}"; do
  package_args+=(-p "$name")
done
cargo build --locked "${package_args[@]}"

step "moto server"
moto_started=0
cleanup() {
  if ((moto_started)); then
    "$MOTO" stop || true
  fi
}
trap cleanup EXIT
# Turn Ctrl-C / TERM into a normal exit so the EXIT trap stops moto.
trap 'exit 130' INT
trap 'exit 143' TERM
moto_started=1
"$MOTO" start
MOTO_URL="$("$MOTO" url)"
export MOTO_URL
# Fake credentials: the adapter tests must never reach a real AWS account, whatever the caller's
# profile or environment holds.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export AWS_REGION="${AWS_REGION:-us-east-1}"
unset AWS_SESSION_TOKEN AWS_PROFILE

step "tests (MOTO_URL=$MOTO_URL)"
if cargo nextest --version >/dev/null 2>&1; then
  # (No doc tests exist; nextest runs every unit, integration and end-to-end test.)
  mkdir -p "$ROOT/target"
  cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$ROOT/target/nextest-output.log"
  summary="$(grep -E 'Summary .* tests? run:' "$ROOT/target/nextest-output.log" | tail -n 1 || true)"
  passed="$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")"
  failed="$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")"
  test_totals="${passed:-0} passed, ${failed:-0} failed"
else
  echo "cargo-nextest not found; falling back to cargo test"
  cargo test --workspace --locked --no-fail-fast
fi

"$MOTO" stop
moto_started=0
if compgen -G "$ROOT/target/console-screenshots/*.png" >/dev/null; then
  # Artifacts of the console's browser test (tests/tests/e2e/console.rs), one per page.
  echo "console screenshots in target/console-screenshots/: $(cd "$ROOT/target/console-screenshots" && echo *.png)"
fi

# Lambda's provided.al2023 has glibc 2.34. The debug binaries are linked like a host-linker
# Lambda build would be (the C code of the TLS stack binds to this host's glibc), so checking them
# catches a host whose glibc would break the functions at cold start, without a release build.
# (They were built before the tests, which run them.)
step "function binaries need at most glibc 2.34"
binaries=()
for name in "${functions[@]}"; do
  binaries+=("$TARGET_DIR/debug/$name")
done
python3 "$GLIBC" "${binaries[@]}"

step "glibc check: a binary needing GLIBC_2.38 must fail"
# Fixtures linked by zig against glibc 2.38 and 2.34 (see $GLIBC_FIXTURES/make-fixtures.sh).
python3 "$GLIBC" "$GLIBC_FIXTURES/needs-glibc-2.34-x86_64"
for fixture in "$GLIBC_FIXTURES/needs-glibc-2.38-x86_64" "$GLIBC_FIXTURES/needs-glibc-2.38-aarch64"; do
  set +e
  glibc_output="$(python3 "$GLIBC" "$fixture" 2>&1)"
  glibc_status=$?
  set -e
  printf '%s\n' "$glibc_output"
  if ((glibc_status != 1)) || ! grep -q "^FAIL .*GLIBC_2.38 .*strlcpy" <<<"$glibc_output"; then
    echo "FAIL: expected check_glibc.py to exit 1 naming strlcpy@GLIBC_2.38 on $fixture, got $glibc_status" >&2
    exit 1
  fi
done
echo "binaries needing GLIBC_2.38 rejected, as expected"

step "cfn-lint template.yaml"
cfn-lint template.yaml

step "sam validate --lint (SAM CLI: the SAM transform, then its lint)"
SAM="${SAM:-sam}"
if command -v "$SAM" >/dev/null 2>&1; then
  # Offline: validate transforms locally; fake credentials and a region are all it asks for.
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
    SAM_CLI_TELEMETRY=0 "$SAM" validate --template template.yaml
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
    SAM_CLI_TELEMETRY=0 "$SAM" validate --lint --template template.yaml
elif [[ "${CI:-}" == "true" ]]; then
  echo "FAIL: SAM CLI not found (.ci/run installs it; or set SAM=/path/to/sam)" >&2
  exit 1
else
  echo "skipped: SAM CLI not found (pip install aws-sam-cli, or set SAM=/path/to/sam)"
fi

step "template rules: template.yaml"
python3 "$CHECK" template.yaml

step "template rules: $BAD_TEMPLATE must fail"
set +e
bad_output="$(python3 "$CHECK" "$BAD_TEMPLATE" 2>&1)"
bad_status=$?
set -e
printf '%s\n' "$bad_output"
if ((bad_status != 1)); then
  echo "FAIL: expected check_template.py to exit 1 on $BAD_TEMPLATE, got $bad_status" >&2
  exit 1
fi
for rule in "${EXPECTED_RULES[@]}"; do
  if ! grep -q "^FAIL \[$rule\]" <<<"$bad_output"; then
    echo "FAIL: check_template.py did not report rule '$rule' on $BAD_TEMPLATE" >&2
    exit 1
  fi
done
echo "negative fixture rejected on all ${#EXPECTED_RULES[@]} rules, as expected"

step "all checks passed"
if [[ -n "${test_totals:-}" ]]; then
  # The plain closing line CI reads: nextest's own summary scrolled far above.
  echo "tests: $test_totals"
fi
