#!/usr/bin/env bash
# Start, stop and locate the local moto server that the AWS adapter tests run against.
#
#   moto.sh start   start moto_server on a free 127.0.0.1 port (no-op if ours is already running)
#   moto.sh stop    stop it (no-op if it is not running)
#   moto.sh url     print its base URL, e.g. http://127.0.0.1:41234
#
# State lives in $MOTO_STATE_DIR (default: <repo>/.moto): pid, url and moto.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${MOTO_STATE_DIR:-$ROOT/.moto}"
PID_FILE="$STATE_DIR/pid"
URL_FILE="$STATE_DIR/url"
LOG_FILE="$STATE_DIR/moto.log"
READY_TIMEOUT_SECS="${MOTO_READY_TIMEOUT_SECS:-30}"
# Another process can take the port between picking it and moto binding it; retry that race.
START_ATTEMPTS=3

die() {
  echo "moto.sh: $*" >&2
  exit 1
}

running_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Exit 0 once GET <url>/moto-api/ answers 200.
is_ready() {
  python3 - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# Stop the process group we started (moto_server may sit behind a pyenv shim or spawn helpers).
kill_server() {
  local pid="$1" waited=0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= 50)); then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

show_log_tail() {
  if [[ -f "$LOG_FILE" ]]; then
    echo "---- last lines of $LOG_FILE ----" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
    echo "----" >&2
  fi
}

start() {
  local pid port url attempt deadline
  command -v moto_server >/dev/null 2>&1 ||
    die 'moto_server not found; install it with: python3 -m pip install "moto[server]==5.2.1"'

  if pid="$(running_pid)"; then
    echo "moto already running (pid $pid) at $(<"$URL_FILE")"
    return 0
  fi
  mkdir -p "$STATE_DIR"
  rm -f "$PID_FILE" "$URL_FILE"

  for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
    port="$(free_port)"
    url="http://127.0.0.1:$port"
    # Job control gives the server its own process group (pgid = pid), so stop can take the
    # whole group down; stdin/stdout detached so callers waiting on our output do not hang.
    set -m
    moto_server -H 127.0.0.1 -p "$port" </dev/null >"$LOG_FILE" 2>&1 &
    pid=$!
    set +m
    echo "$pid" >"$PID_FILE"

    deadline=$((SECONDS + READY_TIMEOUT_SECS))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if is_ready "$url"; then
        echo "$url" >"$URL_FILE"
        echo "moto started (pid $pid) at $url"
        return 0
      fi
      sleep 0.2
    done

    if kill -0 "$pid" 2>/dev/null; then
      kill_server "$pid"
      rm -f "$PID_FILE"
      show_log_tail
      die "moto_server did not answer $url/moto-api/ within ${READY_TIMEOUT_SECS}s"
    fi
    rm -f "$PID_FILE"
    if grep -qi "address already in use" "$LOG_FILE" 2>/dev/null; then
      echo "moto.sh: port $port was taken before moto bound it; retrying" >&2
      continue
    fi
    show_log_tail
    die "moto_server exited during start-up"
  done
  show_log_tail
  die "could not start moto_server after $START_ATTEMPTS attempts"
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill_server "$pid"
    echo "moto stopped (pid $pid)"
  fi
  rm -f "$PID_FILE" "$URL_FILE"
}

url() {
  running_pid >/dev/null || die "moto is not running; run: $0 start"
  [[ -s "$URL_FILE" ]] || die "moto is running but $URL_FILE is missing"
  cat "$URL_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  *)
    echo "usage: $0 {start|stop|url}" >&2
    exit 2
    ;;
esac
