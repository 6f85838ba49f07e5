#!/usr/bin/env python3
"""Run a Lambda custom-runtime binary against a local Runtime API and measure its start and invokes.

A minimal AWS Lambda Runtime API (2018-06-01): GET invocation/next, POST invocation/{id}/response,
POST invocation/{id}/error, POST init/error, served on 127.0.0.1 by one single-threaded event loop
so the emulator adds as little as it can to what it times. Standard library only; no AWS, no Docker.

For each run it starts the binary (a fresh process, like a cold start), hands it the event N+1
times and prints one JSON line:

  init_ms           spawn of the process -> its first GET /next (Lambda's "Init Duration")
  first_invoke_ms   first event handed out -> its response received (the cold invoke's Duration)
  warm_p50_us/p99   the same for the N invokes after it (nearest-rank percentiles)
  peak_rss_mib      VmHWM of the process, read from /proc once it is idle again after the last
                    invoke (Lambda's "Max Memory Used" counts the whole sandbox; this is the process)
  binary_bytes/mib  size of the file
  threads           threads of the process at that point (see --no-spin)

Every figure includes the emulator's own share (process spawn from Python, loopback round trips):
compare a function with the floor (floor/) measured in the same run, never absolute times.
While an invoke is in flight the emulator polls on one core rather than sleeping, which takes
its wake-up latency out of the figures; pass --no-spin for a function that needs both cores
(threads > 1 on a 2-core machine).

With --runs R the top-level figures are medians over R cold starts and "per_run" lists each run.
The process is killed by its PID only; nothing else is signalled. Exit status 0 when every run
initialised and every invoke answered with a response (not an error), 1 otherwise.

Example:
  python3 bench/coldstart/runtime_emulator.py target/bench-floor/release/floor-sqs event.json \
      -n 200 --runs 5 --env TABLE_NAME=xref --env AWS_ENDPOINT_URL=http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

API = "/2018-06-01/runtime"
NEXT = API + "/invocation/next"
INVOCATION = API + "/invocation/"
INIT_ERROR = API + "/init/error"
ACCOUNT = "123456789012"


class RunFailed(Exception):
    """The function did not get through a run: init error, crash, or timeout."""


class Conn:
    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()


def parse_request(buf: bytearray):
    """One complete HTTP/1.1 request from the start of buf, or None if more bytes are needed.

    Returns (bytes consumed, method, path, lower-cased headers, body, trailers). Handles
    Content-Length and chunked bodies (streamed responses, with their error trailers)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    pos = head_end + 4
    trailers: dict[str, str] = {}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0].strip() or b"0", 16)
            pos = line_end + 2
            if size == 0:
                if buf[pos:pos + 2] == b"\r\n":
                    pos += 2
                else:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        return None
                    for line in bytes(buf[pos:end]).decode("latin-1").split("\r\n"):
                        name, _, value = line.partition(":")
                        trailers[name.strip().lower()] = value.strip()
                    pos = end + 4
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
        body = bytes(body)
    else:
        length = int(headers.get("content-length", "0") or 0)
        if len(buf) < pos + length:
            return None
        body = bytes(buf[pos:pos + length])
        pos += length
    return pos, method, target.split("?", 1)[0], headers, body, trailers


def response_bytes(status: int, reason: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode("latin-1") + body


ACCEPTED = response_bytes(202, "Accepted", b'{"status":"OK"}')


def read_proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS (kB) and Threads from /proc/<pid>/status ({} if the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(("VmHWM:", "VmRSS:", "Threads:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def nearest_rank(sorted_values: list[float], pct: float) -> float:
    return sorted_values[max(1, math.ceil(pct / 100 * len(sorted_values))) - 1]


class Run:
    """One cold start of the binary and N+1 invokes, on its own listening port."""

    def __init__(self, opts: argparse.Namespace, event: bytes) -> None:
        self.opts = opts
        self.event = event
        self.total = opts.invokes + 1
        self.handed_out = 0
        self.inflight: dict[str, int] = {}  # request id -> ns when its event was handed out
        self.durations_ns: list[int] = []
        self.errors: list[dict] = []
        self.first_response: bytes | None = None
        self.t_first_next: int | None = None
        self.idle_again = False  # a GET /next arrived after the last invoke
        self.init_error: str | None = None
        self.arn = f"arn:aws:lambda:{opts.region}:{ACCOUNT}:function:{opts.function_name}"
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.port = self.listener.getsockname()[1]

    # --- Runtime API -----------------------------------------------------------------------

    def hand_out(self, conn: Conn) -> None:
        request_id = str(uuid.uuid4())
        now_ms = int(time.time() * 1000)
        trace = (
            f"Root=1-{now_ms // 1000:08x}-{uuid.uuid4().hex[:24]};"
            f"Parent={uuid.uuid4().hex[:16]};Sampled=0;Lineage=1:{uuid.uuid4().hex[:8]}:0"
        )
        payload = response_bytes(
            200,
            "OK",
            self.event,
            f"Lambda-Runtime-Aws-Request-Id: {request_id}\r\n"
            f"Lambda-Runtime-Deadline-Ms: {now_ms + int(self.opts.timeout * 1000)}\r\n"
            f"Lambda-Runtime-Invoked-Function-Arn: {self.arn}\r\n"
            f"Lambda-Runtime-Trace-Id: {trace}\r\n",
        )
        self.handed_out += 1
        self.inflight[request_id] = time.perf_counter_ns()
        conn.sock.sendall(payload)

    def handle(self, conn: Conn, t_recv: int, method, path, headers, body, trailers) -> None:
        if method == "GET" and path == NEXT:
            if self.t_first_next is None:
                self.t_first_next = t_recv
            if self.handed_out < self.total:
                self.hand_out(conn)
            else:
                self.idle_again = True  # leave it hanging, as Lambda does between invokes
            return
        if method == "POST" and path.startswith(INVOCATION):
            request_id, _, kind = path[len(INVOCATION):].partition("/")
            started = self.inflight.pop(request_id, None) if kind in ("response", "error") else None
            if started is None:
                conn.sock.sendall(response_bytes(
                    400, "Bad Request",
                    b'{"errorMessage":"unknown request id or path","errorType":"InvalidRequestID"}'))
                return
            self.durations_ns.append(t_recv - started)
            error_type = trailers.get("lambda-runtime-function-error-type")
            if kind == "error" or error_type:
                self.errors.append({
                    "invoke": len(self.durations_ns),
                    "type": error_type or headers.get("lambda-runtime-function-error-type"),
                    "body": (trailers.get("lambda-runtime-function-error-body") or
                             body.decode("utf-8", "replace"))[:2000],
                })
            elif self.first_response is None:
                self.first_response = body
            conn.sock.sendall(ACCEPTED)
            return
        if method == "POST" and path == INIT_ERROR:
            self.init_error = (headers.get("lambda-runtime-function-error-type", "") + " " +
                               body.decode("utf-8", "replace"))[:2000]
            conn.sock.sendall(ACCEPTED)
            return
        conn.sock.sendall(response_bytes(404, "Not Found", b'{"errorMessage":"not found"}'))

    # --- event loop ------------------------------------------------------------------------

    def pump(self, timeout: float) -> int:
        """Serve whatever is ready (waiting up to timeout); returns how many sockets were ready."""
        ready = self.sel.select(timeout)
        for key, _mask in ready:
            if key.data is None:
                sock, _addr = self.listener.accept()
                sock.setblocking(True)  # reads only after select says readable; sends may block
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sel.register(sock, selectors.EVENT_READ, Conn(sock))
                continue
            conn: Conn = key.data
            try:
                data = conn.sock.recv(1 << 20)
            except ConnectionError:
                data = b""
            t_recv = time.perf_counter_ns()
            if not data:
                self.sel.unregister(conn.sock)
                conn.sock.close()
                continue
            conn.buf += data
            while True:
                parsed = parse_request(conn.buf)
                if parsed is None:
                    break
                used, *request = parsed
                del conn.buf[:used]
                self.handle(conn, t_recv, *request)
        return len(ready)

    def execute(self, env: dict[str, str], log) -> dict:
        opts = self.opts
        t_spawn = time.perf_counter_ns()
        proc = subprocess.Popen(
            [opts.binary], env=env, cwd=os.path.dirname(opts.binary) or ".",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        t_spawned = time.perf_counter_ns()
        try:
            deadline = time.monotonic() + opts.init_timeout
            stage = "init"
            last_check = 0.0
            while True:
                # While an invoke is in flight the loop polls instead of sleeping in epoll, so the
                # emulator's own wake-up latency stays out of the figures (one core for it, one
                # for the function). Bookkeeping runs when the loop is quiet or every 50 ms, never
                # between a response arriving and its timestamp being taken.
                timeout = 0 if self.inflight and opts.spin else 0.05
                ready = self.pump(timeout)
                if (ready or timeout == 0) and time.monotonic() - last_check < 0.05 \
                        and len(self.durations_ns) < self.total and self.init_error is None:
                    continue
                last_check = time.monotonic()
                if self.init_error is not None:
                    raise RunFailed(f"init error posted: {self.init_error}")
                if len(self.durations_ns) == self.total:
                    if stage != "idle":
                        stage, deadline = "idle", time.monotonic() + opts.idle_wait
                    if self.idle_again or time.monotonic() > deadline:
                        break
                elif self.t_first_next is not None and stage == "init":
                    stage = "invoke"
                if stage != "idle" and proc.poll() is not None:
                    raise RunFailed(f"process exited with status {proc.returncode} during {stage}"
                                    f" after {len(self.durations_ns)} of {self.total} invokes")
                if stage == "invoke":
                    oldest = min(self.inflight.values(), default=None)
                    if oldest is not None and time.perf_counter_ns() - oldest > opts.timeout * 1e9:
                        raise RunFailed(f"invoke {len(self.durations_ns) + 1} timed out"
                                        f" after {opts.timeout} s")
                elif stage == "init" and time.monotonic() > deadline:
                    raise RunFailed(f"no GET /next within {opts.init_timeout} s of spawn")
            vm = read_proc_status(proc.pid)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # only the process this run started
            proc.wait()
            for key in list(self.sel.get_map().values()):
                key.fileobj.close()
            self.sel.close()
        warm = sorted(d / 1000 for d in self.durations_ns[1:])
        result = {
            "init_ms": round((self.t_first_next - t_spawn) / 1e6, 3),
            "spawn_ms": round((t_spawned - t_spawn) / 1e6, 3),
            "first_invoke_ms": round(self.durations_ns[0] / 1e6, 3),
            "warm_p50_us": round(nearest_rank(warm, 50), 1) if warm else None,
            "warm_p99_us": round(nearest_rank(warm, 99), 1) if warm else None,
            "warm_mean_us": round(statistics.fmean(warm), 1) if warm else None,
            "warm_max_us": round(warm[-1], 1) if warm else None,
            "peak_rss_kb": vm.get("VmHWM"),
            "peak_rss_mib": round(vm["VmHWM"] / 1024, 2) if "VmHWM" in vm else None,
            "rss_end_kb": vm.get("VmRSS"),
            "threads": vm.get("Threads"),
            "errors": len(self.errors),
        }
        if self.errors:
            result["first_error"] = self.errors[0]
        if opts.show_response and self.first_response is not None:
            result["first_response"] = self.first_response.decode("utf-8", "replace")[:2000]
        return result


def lambda_env(opts: argparse.Namespace, port: int) -> dict[str, str]:
    """The variables Lambda sets for a provided.al2023 function, then --env on top.

    The environment starts empty, as in Lambda, unless --inherit-env is given."""
    env = dict(os.environ) if opts.inherit_env else {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
    }
    task_root = os.path.dirname(opts.binary) or "."
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": opts.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(opts.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{opts.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
        "AWS_REGION": opts.region,
        "AWS_DEFAULT_REGION": opts.region,
        "_HANDLER": opts.handler,
        "LAMBDA_TASK_ROOT": task_root,
        "LAMBDA_RUNTIME_DIR": task_root,
    })
    for item in opts.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    return env


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure a Lambda custom-runtime binary against a local Runtime API.")
    parser.add_argument("binary", help="the function executable (a `bootstrap`)")
    parser.add_argument("event", help="JSON file handed to the function on every invoke")
    parser.add_argument("-n", "--invokes", type=int, default=200,
                        help="warm invokes after the first one (default 200)")
    parser.add_argument("--runs", type=int, default=1,
                        help="cold starts; top-level figures are their medians (default 1)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment variable for the function (repeatable)")
    parser.add_argument("--inherit-env", action="store_true",
                        help="start from this shell's environment instead of an empty one")
    parser.add_argument("--function-name", help="default: the binary's file name")
    parser.add_argument("--memory", type=int, default=128, help="MB reported to the function")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--handler", default="bootstrap", help="value of _HANDLER")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="function timeout in s: sets the deadline header, fails a slow invoke")
    parser.add_argument("--init-timeout", type=float, default=10.0)
    parser.add_argument("--idle-wait", type=float, default=2.0,
                        help="s to wait for the GET /next after the last invoke before reading RSS")
    parser.add_argument("--no-spin", dest="spin", action="store_false",
                        help="sleep in epoll while an invoke is in flight instead of polling; "
                        "adds the emulator's wake-up latency to every invoke figure")
    parser.add_argument("--log", help="append the function's stdout and stderr here "
                        "(default: a temporary file, its tail shown on failure)")
    parser.add_argument("--show-response", action="store_true",
                        help="include the first response body in the output")
    opts = parser.parse_args(argv)
    opts.binary = os.path.abspath(opts.binary)
    if not os.access(opts.binary, os.X_OK):
        parser.error(f"not an executable file: {opts.binary}")
    if opts.invokes < 0 or opts.runs < 1:
        parser.error("--invokes must be >= 0 and --runs >= 1")
    opts.function_name = opts.function_name or os.path.basename(opts.binary)
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    with open(opts.event, "rb") as handle:
        event = handle.read()
    try:
        json.loads(event)  # refuse a malformed event before blaming the function
    except ValueError as exc:
        raise SystemExit(f"{opts.event}: not JSON ({exc})") from None
    scratch = None if opts.log else tempfile.mkdtemp(prefix="lambda-emu-")
    log_path = opts.log or os.path.join(scratch, "function.log")
    runs: list[dict] = []
    failure = None
    try:
        for _ in range(opts.runs):
            run = Run(opts, event)
            with open(log_path, "ab") as log:
                try:
                    runs.append(run.execute(lambda_env(opts, run.port), log))
                except RunFailed as exc:
                    failure = str(exc)
                    break
    finally:
        tail = ""
        if failure and os.path.exists(log_path):
            with open(log_path, "rb") as log:
                tail = log.read()[-3000:].decode("utf-8", "replace")
        if scratch:
            if os.path.exists(log_path):
                os.remove(log_path)
            os.rmdir(scratch)

    size = os.path.getsize(opts.binary)
    out: dict = {
        "binary": opts.binary,
        "binary_bytes": size,
        "binary_mib": round(size / 2**20, 2),
        "event": os.path.abspath(opts.event),
        "invokes": opts.invokes,
        "runs": len(runs),
    }
    if runs:
        for name in ("init_ms", "spawn_ms", "first_invoke_ms", "warm_p50_us", "warm_p99_us",
                     "warm_mean_us", "warm_max_us", "peak_rss_kb", "peak_rss_mib", "rss_end_kb",
                     "threads"):
            values = [r[name] for r in runs if r.get(name) is not None]
            median = statistics.median(values) if values else None
            integral = name.endswith("_kb") or name == "threads"
            out[name] = None if median is None else round(median) if integral else round(median, 3)
        out["errors"] = sum(r["errors"] for r in runs)
        for name in ("first_error", "first_response"):
            found = next((r[name] for r in runs if name in r), None)
            if found is not None:
                out[name] = found
        if len(runs) > 1:
            out["init_ms_runs"] = [r["init_ms"] for r in runs]
            out["per_run"] = runs
    out["ok"] = failure is None and out.get("errors", 1) == 0
    if failure:
        out["failure"] = failure
        out["log_tail"] = tail
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
