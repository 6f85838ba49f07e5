#!/usr/bin/env python3
"""Cold starts of every Lambda function beside a hello-world floor, measured in one run.

Builds (release profile) the two floor functions in floor/ and every package under functions/,
then starts each binary cold against runtime_emulator.py (a local Lambda Runtime API), rounds x
times, interleaved so that the machine's noise falls on all binaries alike, and prints per
function: binary size, init (spawn to the first GET /next, Lambda's "Init Duration"), the first
invoke, peak RSS, each with its ratio to the floor of the same shape (lambda_http functions to
floor-http, SQS consumers to floor-sqs) measured in this run. Medians over the rounds.

No network: every remote (Enerflo, the CRM, DynamoDB, SQS) is one plain-HTTP stub on 127.0.0.1
that answers every request `400` at once, an answer nobody retries. So the first invoke runs the
function's own path and its first remote calls, with everything it builds on first use (clients,
connections, credentials, signing), and no backoff sleep. TLS handshakes are not in the figures
(nothing here serves HTTPS); building the TLS configuration is. The events are the function's real
route or stage (infra/stages.json), with small fake bodies.

The figures are for comparing builds on one machine, never asserted: machines are noisy, and
only the ratios to the floor carry over. Standard library only.

  python3 bench/coldstart/run.py                  # build, then 7 rounds
  python3 bench/coldstart/run.py --rounds 11 --no-build --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EMULATOR = os.path.join(HERE, "runtime_emulator.py")
# Where cargo puts its output: CARGO_TARGET_DIR when set (relative to the repository, where cargo
# runs), as cargo does.
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")

# The budgets of the cold-start issue, shown beside the ratios (not enforced).
BUDGET = {"init": 3.0, "size": 3.5, "rss": 5.0}

WEBHOOK_TOKEN = "bench-webhook-token"
INBOUND_TOKEN = "bench-inbound-token"

# Small fake bodies, one per inbound route and outbound stage (no real customer data).
INBOUND_BODIES = {
    "leads": {"crm_id": "bench-lead-1", "first_name": "Pat", "last_name": "Placeholder",
              "email": "pat@example.com", "mobile": "5550100000",
              "address": {"street": "1 Example Way", "city": "Exampleville", "state": "TX",
                          "zip": "75001"},
              "rep_email": "closer@example.com", "lead_source": "CRM"},
    "milestone": {"start_date": "2025-04-01", "completed_date": None, "crm_update_id": "bench-1"},
    "status": {"status": "On Hold"},
    "note": {"crm_note_id": "bench-note-1", "text": "Bench note", "author": "Bench"},
    "monday": {"event": {"type": "update_column_value", "boardId": 1, "pulseId": 2,
                         "columnId": "status", "value": {"label": {"text": "On Hold"}}}},
}
INBOUND_PARAMS = {"install": "1001", "milestone": "3901", "token": "bench-monday-token"}
STAGE_BODIES = {
    "leads": {"event": "customer.created", "payload": {"id": "cust-bench-1",
              "firstName": "Pat", "lastName": "Placeholder", "email": "pat@example.com"}},
    "project": {"event": "deal.projectSubmitted", "payload": {"deal": {"id": "deal-bench-1"}}},
    "milestone": {"webhook_event": "project_milestone_updated", "install_id": 1001,
                  "milestone_id": 3901, "start_date": "2025-04-01", "completed_date": None,
                  "updated_at": "2025-04-01 10:00:00"},
    "status": {"webhook_event": "update_install", "install_id": 1001, "status": "On Hold",
               "updated_at": "2025-04-01 10:00:00"},
    "note": {"webhook_event": "new_install_note", "install_id": 1001,
             "note": {"id": 77, "note": "Bench note", "created_at": "2025-03-01 10:00:00"}},
    "change_order": {"webhook_event": "signed_change_order", "install_id": 1001,
                     "change_order": {"id": 5, "signed_at": "2025-03-01 10:00:00"}},
}
WEBHOOK_BODY = {"event": "customer.created", "payload": {"id": "cust-bench-1",
                "firstName": "Pat", "lastName": "Placeholder", "email": "pat@example.com"}}


def apigw_event(method: str, path: str, body: dict, headers: dict[str, str]) -> dict:
    text = json.dumps(body)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "content-length": str(len(text)),
                    "host": "bench.execute-api.us-east-1.amazonaws.com",
                    "user-agent": "coldstart-bench", **headers},
        "requestContext": {
            "accountId": "123456789012", "apiId": "bench", "domainName":
            "bench.execute-api.us-east-1.amazonaws.com", "domainPrefix": "bench",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.10", "userAgent": "coldstart-bench"},
            "requestId": "bench-request", "routeKey": "$default", "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 1767225600000,
        },
        "body": text,
        "isBase64Encoded": False,
    }


def sqs_event(stage: str, event: str, body: dict) -> dict:
    attrs = {"stage": stage, "event": event, "dedupe_key": f"{event}:bench:1",
             "group": f"bench:{stage}", "received_at": "2026-01-01T00:00:00Z"}
    return {"Records": [{
        "messageId": "00000000-0000-4000-8000-000000000001",
        "receiptHandle": "bench-receipt-handle",
        "body": json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1767225600000",
                       "SequenceNumber": "1", "MessageGroupId": f"bench:{stage}",
                       "MessageDeduplicationId": "bench-1",
                       "ApproximateFirstReceiveTimestamp": "1767225600000"},
        "messageAttributes": {k: {"stringValue": v, "stringListValues": [],
                                  "binaryListValues": [], "dataType": "String"}
                              for k, v in attrs.items()},
        "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{stage}.fifo",
        "awsRegion": "us-east-1",
    }]}


def scheduled_event() -> dict:
    return {"version": "0", "id": "00000000-0000-4000-8000-000000000002",
            "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
            "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/bench"], "detail": {}}


def functions() -> list[dict]:
    """Every package under functions/, with its shape and the event it is benchmarked with:
    an inbound function its first route in infra/stages.json, a consumer its stage, a scheduled
    function an EventBridge event, the webhook and the operator console their own request."""
    with open(os.path.join(ROOT, "infra", "stages.json"), encoding="utf-8") as handle:
        registry = json.load(handle)
    inbound: dict[str, dict] = {}
    for route in registry["inbound"]:
        inbound.setdefault(route["function"], route)
    outbound = {s["function"]: s for s in registry["outbound"]}
    scheduled = {s["function"]: s for s in registry.get("scheduled", [])}
    out = []
    for name in sorted(os.listdir(os.path.join(ROOT, "functions"))):
        manifest = os.path.join(ROOT, "functions", name, "Cargo.toml")
        if not os.path.exists(manifest):
            continue
        with open(manifest, "rb") as handle:
            package = tomllib.load(handle)["package"]["name"]
        if package in inbound:
            route = inbound[package]
            path = route["path"]
            for param, value in INBOUND_PARAMS.items():
                path = path.replace("{" + param + "}", value)
            body = INBOUND_BODIES.get(route["route"], {"bench": True})
            event = apigw_event(route["method"], path, body,
                                {"authorization": f"Bearer {INBOUND_TOKEN}"})
            kind = "http"
        elif package in outbound:
            stage = outbound[package]
            event = sqs_event(stage["stage"], stage["events"][0], STAGE_BODIES[stage["stage"]])
            kind = "sqs"
        elif package in scheduled:
            event = scheduled_event()
            kind = "sqs"  # a lambda_runtime function: compared with that floor
        elif package == "enerflo-webhook":
            event = apigw_event("POST", f"/enerflo/webhooks/{WEBHOOK_TOKEN}", WEBHOOK_BODY, {})
            kind = "http"
        elif package == "ops-console":
            event = apigw_event("GET", "/ops", {}, {"cookie": "bench=1"})
            kind = "http"
        else:
            raise SystemExit(f"{package}: not in infra/stages.json, not the webhook or the "
                             "console; add its event to bench/coldstart/run.py")
        out.append({"name": package, "kind": kind, "event": event})
    return out


class Stub(http.server.BaseHTTPRequestHandler):
    """Every remote at once: reads the request, answers 400 with a JSON error body, in one write
    with Nagle off (headers and body in two segments would stall on the client's delayed ACK)."""

    protocol_version = "HTTP/1.1"
    body = json.dumps({"__type": "com.amazon.coral.validate#ValidationException",
                       "message": "bench stub: no remote here"}).encode()
    answer_bytes = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.wfile.write(self.answer_bytes)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

    def log_message(self, *args) -> None:
        pass


def start_stub() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


# What a function needs beyond the shared environment, as template.yaml deploys it:
# hubspot-notes-poll exists only with CrmConnector hubspot (its IsHubSpot condition).
ONLY_ENV = {"hubspot-notes-poll": ["CRM_CONNECTOR=hubspot"]}


def function_env(port: int) -> list[str]:
    stub = f"127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": f"http://{stub}",
        "AWS_ACCESS_KEY_ID": "AKIDBENCHFAKE", "AWS_SECRET_ACCESS_KEY": "bench-fake-secret",
        "AWS_SESSION_TOKEN": "bench-fake-session",
        "TABLE_NAME": "bench-table",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN, "CRM_INBOUND_TOKEN": INBOUND_TOKEN,
        "ENERFLO_BASE_URL": f"http://{stub}", "ENERFLO_API_KEY": "bench-fake-key",
        "CRM_WEBHOOK_URL": f"http://{stub}/crm/events",
        "HUBSPOT_BASE_URL": f"http://{stub}", "HUBSPOT_ACCESS_TOKEN": "bench-fake-hubspot-token",
        "MONDAY_API_URL": f"http://{stub}/v2", "MONDAY_WEBHOOK_TOKEN": "bench-monday-token",
        "OPS_TOKEN": "bench-fake-ops-token",
        # base64 of "bench-fake-signing-secret"
        "CRM_WEBHOOK_SECRET": "whsec_YmVuY2gtZmFrZS1zaWduaW5nLXNlY3JldA==",
    }
    with open(os.path.join(ROOT, "infra", "stages.json"), encoding="utf-8") as handle:
        for stage in json.load(handle)["outbound"]:
            prefix = stage["env_prefix"]
            env[f"{prefix}_QUEUE_URL"] = f"http://{stub}/123456789012/{stage['stage']}.fifo"
            env[f"{prefix}_DLQ_URL"] = f"http://{stub}/123456789012/{stage['stage']}-dlq.fifo"
    return [f"{k}={v}" for k, v in env.items()]


def build(packages: list[str]) -> None:
    floor = os.path.join(HERE, "floor", "Cargo.toml")
    steps = [
        ["cargo", "build", "--release", "--locked", "--manifest-path", floor,
         "--target-dir", os.path.join(TARGET, "bench-floor")],
        ["cargo", "build", "--release", "--locked", *[a for p in packages for a in ("-p", p)]],
    ]
    for cmd in steps:
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


def measure(binary: str, event_file: str, env: list[str]) -> dict:
    cmd = [sys.executable, EMULATOR, binary, event_file, "-n", "0", "--runs", "1", "--no-spin"]
    for item in env:
        cmd += ["--env", item]
    done = subprocess.run(cmd, capture_output=True, text=True)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"{binary}: the emulator printed no result\n{done.stderr}") from None
    if "init_ms" not in result:
        raise SystemExit(f"{binary}: did not start: {result.get('failure')}\n"
                         f"{result.get('log_tail', '')}")
    return result


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle
                          if line.startswith("model name")), "")
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
            f"{' (' + model + ')' if model else ''}, {rustc}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="cold starts per binary (default 7)")
    parser.add_argument("--no-build", action="store_true", help="measure the binaries as built")
    parser.add_argument("--only", help="comma-separated function names (default: all)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--seed", type=int, default=1, help="order of the binaries in each round")
    parser.add_argument("--release-dir", default=os.path.join(TARGET, "release"),
                        help="where the function binaries are (default target/release)")
    parser.add_argument("--floor-dir", default=os.path.join(TARGET, "bench-floor", "release"),
                        help="where the floor binaries are (default target/bench-floor/release)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR",
                        help="also measure the same functions built elsewhere (another commit), "
                        "in the same rounds, shown as name@LABEL (repeatable)")
    opts = parser.parse_args(argv)

    funcs = functions()
    if opts.only:
        wanted = set(opts.only.split(","))
        funcs = [f for f in funcs if f["name"] in wanted]
        if missing := wanted - {f["name"] for f in funcs}:
            raise SystemExit(f"no such function: {', '.join(sorted(missing))}")
    if not opts.no_build:
        build([f["name"] for f in funcs])

    floor_dir = opts.floor_dir
    dirs = [("", opts.release_dir)]
    for item in opts.compare:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--compare wants LABEL=DIR, got {item!r}")
        dirs.append(("@" + label, path))
    scratch = tempfile.mkdtemp(prefix="coldstart-")
    http_floor = os.path.join(scratch, "apigw.json")
    sqs_floor = os.path.join(scratch, "sqs.json")
    with open(http_floor, "w", encoding="utf-8") as handle:
        json.dump(apigw_event("POST", "/", {"ok": True}, {}), handle)
    with open(sqs_floor, "w", encoding="utf-8") as handle:
        json.dump(sqs_event("leads", "customer.created", {"ok": True}), handle)
    targets = [
        {"name": "floor-http", "kind": "http", "binary": os.path.join(floor_dir, "floor-http"),
         "event_file": http_floor},
        {"name": "floor-sqs", "kind": "sqs", "binary": os.path.join(floor_dir, "floor-sqs"),
         "event_file": sqs_floor},
    ]
    for func in funcs:
        path = os.path.join(scratch, func["name"] + ".json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(func["event"], handle)
        for label, directory in dirs:
            binary = os.path.join(directory, func["name"])
            if label and not os.path.exists(binary):
                continue  # a function that did not exist at the compared commit
            targets.append({"name": func["name"] + label, "kind": func["kind"],
                            "binary": binary, "event_file": path})
    for target in targets:
        if not os.access(target["binary"], os.X_OK):
            raise SystemExit(f"{target['binary']}: not built (run without --no-build)")
        target["runs"] = []

    env = function_env(start_stub())
    order = random.Random(opts.seed)
    for round_no in range(opts.rounds):
        print(f"round {round_no + 1}/{opts.rounds}", file=sys.stderr, flush=True)
        for target in order.sample(targets, len(targets)):
            target["runs"].append(measure(target["binary"], target["event_file"],
                                          env + ONLY_ENV.get(target["name"], [])))

    def median(target: dict, key: str) -> float:
        return statistics.median(r[key] for r in target["runs"])

    rows = []
    for target in targets:
        rows.append({
            "name": target["name"], "kind": target["kind"],
            "size_mib": round(os.path.getsize(target["binary"]) / 2**20, 2),
            "init_ms": round(median(target, "init_ms"), 2),
            "first_invoke_ms": round(median(target, "first_invoke_ms"), 2),
            "peak_rss_mib": round(median(target, "peak_rss_mib"), 2),
            "threads": int(median(target, "threads")),
            "init_ms_runs": [r["init_ms"] for r in target["runs"]],
            "first_invoke_ms_runs": [r["first_invoke_ms"] for r in target["runs"]],
        })
    floors = {row["kind"]: row for row in rows if row["name"].startswith("floor-")}
    for row in rows:
        floor = floors[row["kind"]]
        row["size_x"] = round(row["size_mib"] / floor["size_mib"], 2)
        row["init_x"] = round(row["init_ms"] / floor["init_ms"], 2)
        row["rss_x"] = round(row["peak_rss_mib"] / floor["peak_rss_mib"], 2)

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nCold starts, {when}, {machine()}; median of {opts.rounds} rounds; "
          f"ratios to the floor of the same shape measured in this run "
          f"(budgets: init {BUDGET['init']}x, size {BUDGET['size']}x, RSS {BUDGET['rss']}x).\n")
    print("| function | size MiB | x floor | init ms | x floor | first invoke ms "
          "| peak RSS MiB | x floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def mark(value: float, budget: float) -> str:
        return f"{value:.2f}" if value <= budget else f"**{value:.2f}** (over {budget})"

    for row in rows:
        print(f"| {row['name']} | {row['size_mib']:.2f} | {mark(row['size_x'], BUDGET['size'])} "
              f"| {row['init_ms']:.2f} | {mark(row['init_x'], BUDGET['init'])} "
              f"| {row['first_invoke_ms']:.2f} | {row['peak_rss_mib']:.2f} "
              f"| {mark(row['rss_x'], BUDGET['rss'])} |")
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as handle:
            json.dump({"when": when, "machine": machine(), "rounds": opts.rounds, "rows": rows},
                      handle, indent=1)
    for name in os.listdir(scratch):
        os.remove(os.path.join(scratch, name))
    os.rmdir(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
