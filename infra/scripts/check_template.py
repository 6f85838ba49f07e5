#!/usr/bin/env python3
"""Repository invariants for the SAM template that cfn-lint does not enforce.

cfn-lint checks that the template is valid CloudFormation; these rules check that it is safe to
run this service on it (AWS guidance for SQS-triggered Lambdas, plus this project's rules on
secrets and least privilege):

  iam-wildcard     no Allow statement names "*" or "<service>:*" (or "...:*") as Action or Resource,
                   or uses NotAction / NotResource
  sqs-visibility   every queue feeding a function has VisibilityTimeout >= 6x that function's
                   Timeout (Globals included); cfn-lint only enforces 1x
  queue-dlq        every source queue redrives to a DLQ with maxReceiveCount >= 5, and a FIFO
                   source to a FIFO DLQ; when the template has a RetryMaxAttempts parameter, also
                   maxReceiveCount >= its MaxValue x the source's BatchSize (receives of a message
                   held back behind failing ones of its group are not attempts, see README)
  batch-failures   every SQS event source reports partial batch failures (ReportBatchItemFailures)
  noecho           every parameter named like a token, secret or API key has NoEcho: true
  access-log-path  no API access log format records $context.path (the webhook token is a path
                   segment)
  function-role    every function names its own AWS::IAM::Role (`Role:`, used by no other
                   function, trusting only lambda.amazonaws.com) and has no SAM `Policies:`, so SAM
                   attaches no AWS-managed policy (AWSLambdaBasicExecutionRole writes logs anywhere,
                   AWSLambdaSQSQueueExecutionRole receives from every queue); the role has no
                   ManagedPolicyArns. When aws-sam-translator is importable (it comes with
                   cfn-lint) the template is also transformed offline and every generated role is
                   checked for ManagedPolicyArns.
  role-scope       every statement of a function's role stays inside that function's stage: logs
                   actions only on the function's own LoggingConfig.LogGroup; a queue consumer's
                   sqs actions only on its own source queue (SendMessage only on that queue's DLQ);
                   any other function may only SendMessage, and only to stage queues (never a DLQ);
                   the operator console (ops-console) may besides ReceiveMessage,
                   ChangeMessageVisibility and DeleteMessage on the stage DLQs only, and of dynamodb
                   only read (GetItem, Query); dynamodb actions only on a table of this template;
                   no other service
  stage-registry   the template matches the stage registry (infra/stages.json, which a Rust test
                   keeps equal to shared/src/registry.rs). A function's binary is its
                   Metadata.BuildProperties.Binary (cargo-lambda builds it from `CodeUri: .`).
                   Every outbound stage has exactly one function building its `function`, which
                   consumes exactly one SQS source: a FIFO queue whose DLQ is FIFO, used by no other
                   stage; the function's environment (Globals.Function.Environment merged with its
                   own) has <ENV_PREFIX>_QUEUE_URL = that queue's URL and, as the template passes
                   DLQ URLs, <ENV_PREFIX>_DLQ_URL = its DLQ's URL; the webhook function
                   (enerflo-webhook) has <ENV_PREFIX>_QUEUE_URL of every stage and may SendMessage
                   to every stage queue. Every inbound route has exactly one function building its
                   `function`, with an HttpApi event of its method and path. Every scheduled
                   function has exactly one function building it, with a Schedule (or ScheduleV2)
                   event whose expression is !Ref its schedule parameter, a parameter of the
                   template, or else one AWS::Events::Rule of that ScheduleExpression targeting it
                   and an AWS::Lambda::Permission letting events.amazonaws.com invoke it. No
                   function builds a binary the registry does not list (enerflo-webhook and
                   ops-console aside), no queue is other than
                   a stage's queue or DLQ, and no *_QUEUE_URL / *_DLQ_URL variable names a prefix
                   the registry does not list.

  alarm-actions    every AWS::CloudWatch::Alarm notifies an SNS topic of this template (AlarmActions
                   and OKActions hold a Ref to it, unconditionally): an alarm with no action
                   tells nobody
  alarm-coverage   every function has an Errors and a Throttles alarm (AWS/Lambda, FunctionName =
                   that function), every SQS source queue an ApproximateAgeOfOldestMessage alarm
                   and every DLQ an ApproximateNumberOfMessagesVisible alarm
  function-logging every function's LoggingConfig (Globals.Function's merged with its own, as SAM
                   merges them) has LogFormat JSON, ApplicationLogLevel and SystemLogLevel (Lambda
                   drops DEBUG lines otherwise, whatever RUST_LOG says) and a LogGroup of this
                   template with RetentionInDays; its environment sets RUST_LOG. Checked on the
                   SAM output too when it can be transformed
  architecture     every function's Architectures is [!Ref <parameter>] of a parameter allowing
                   exactly x86_64 and arm64, so one stack parameter picks the CPU of all
  resource-names   a physical name the template sets (QueueName, TopicName, FunctionName, ...)
                   fits its service's limit for any parameter value: the stack name counts as
                   128 characters, a parameter as its MaxLength (unknown length fails); a FIFO
                   queue's name ends in .fifo. Names left out are CloudFormation's, which fit
  secret-pattern   a Standard Webhooks signing secret parameter (named *WebhookSecret) has an
                   AllowedPattern that accepts what the functions decode (`whsec_` + padded
                   standard base64 of 24+ bytes) and rejects what fails them at start-up (no
                   prefix, a base64 of the wrong length, characters outside base64), so a bad
                   value fails the deploy instead of every function's init
  dashboard        an AWS::CloudWatch::Dashboard shows, for every stage, its source queue's
                   ApproximateAgeOfOldestMessage and its DLQ's ApproximateNumberOfMessagesVisible
                   (`${Queue.QueueName}` in the body)

Usage: check_template.py [--stages STAGES_JSON] [TEMPLATE]   (default: template.yaml)
  --stages defaults to infra/stages.json of the nearest directory above the template that has
  one (the repository root for template.yaml and for infra/scripts/bad-template.yaml).
Exit status: 0 all checks passed, 1 some check failed, 2 the template or the stage registry could
not be read.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import yaml

VISIBILITY_FACTOR = 6
MIN_MAX_RECEIVE_COUNT = 5
# The consumer's attempt budget; the source queues' redrive must never act before it does.
RETRY_PARAMETER = "RetryMaxAttempts"
DEFAULT_SQS_BATCH_SIZE = 10
# CloudFormation / SAM defaults used when a property is absent.
DEFAULT_LAMBDA_TIMEOUT = 3
DEFAULT_VISIBILITY_TIMEOUT = 30

SECRET_PARAM = re.compile(r"token|secret|api_?key", re.IGNORECASE)
# Also matches "${!context.path}", which Fn::Sub renders as a literal "${context.path}".
CONTEXT_PATH = re.compile(r"\$\{?!?context\.path(?![A-Za-z0-9_])")

IAM_DOC_RESOURCES = {
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::IAM::RolePolicy",
    "AWS::IAM::UserPolicy",
    "AWS::IAM::GroupPolicy",
}
IAM_INLINE_RESOURCES = {"AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"}
SAM_POLICY_RESOURCES = {"AWS::Serverless::Function", "AWS::Serverless::StateMachine"}
FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}

# The services a function's role may name at all; anything else needs a deliberate rule change.
ROLE_SERVICES = {"logs", "sqs", "dynamodb"}
SQS_SEND = "sqs:sendmessage"
LAMBDA_PRINCIPAL = "lambda.amazonaws.com"
# `${Table.Arn}` or `${Table.Arn}/index/<name>` in a Sub.
# Longest value of each pseudo parameter a name can embed.
PSEUDO_LENGTHS = {
    "AWS::StackName": 128,
    "AWS::Region": 20,
    "AWS::AccountId": 12,
    "AWS::Partition": 10,
    "AWS::URLSuffix": 16,
}
# Physical name properties and their service's length limit.
NAME_LIMITS = {
    "AWS::SQS::Queue": ("QueueName", 80),
    "AWS::SNS::Topic": ("TopicName", 256),
    "AWS::Serverless::Function": ("FunctionName", 64),
    "AWS::Lambda::Function": ("FunctionName", 64),
    "AWS::IAM::Role": ("RoleName", 64),
    "AWS::DynamoDB::Table": ("TableName", 255),
    "AWS::CloudWatch::Dashboard": ("DashboardName", 255),
    "AWS::CloudWatch::Alarm": ("AlarmName", 255),
    "AWS::Logs::LogGroup": ("LogGroupName", 512),
}
ARCHITECTURES = {"x86_64", "arm64"}
SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")
SUB_ARN = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.Arn)?\}(?:/index/[A-Za-z0-9_.-]+)?")


# --------------------------------------------------------------------------------------------
# Loading: CloudFormation short-form tags become their long form, so the rest of the script
# sees one shape ({"Ref": x}, {"Fn::GetAtt": [id, attr]}, {"Fn::Sub": ...}, ...).
# --------------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands !Ref, !Sub, !GetAtt and the other intrinsic short forms."""


def _construct_intrinsic(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError("top level is not a mapping")
    return document


# --------------------------------------------------------------------------------------------
# The stage registry (infra/stages.json, generated from shared/src/registry.rs)
# --------------------------------------------------------------------------------------------

REGISTRY_PATH = os.path.join("infra", "stages.json")
WEBHOOK_BINARY = "enerflo-webhook"
# The operator console: no stage of its own; reads the table, lists and replays dead letters.
CONSOLE_BINARY = "ops-console"
CONSOLE_DLQ_ACTIONS = {"sqs:receivemessage", "sqs:changemessagevisibility", "sqs:deletemessage"}
CONSOLE_TABLE_ACTIONS = {"dynamodb:getitem", "dynamodb:query"}


@dataclass(frozen=True)
class OutboundStage:
    stage: str
    env_prefix: str
    function: str

    @property
    def queue_var(self) -> str:
        return f"{self.env_prefix}_QUEUE_URL"

    @property
    def dlq_var(self) -> str:
        return f"{self.env_prefix}_DLQ_URL"


@dataclass(frozen=True)
class InboundRoute:
    route: str
    method: str
    path: str
    function: str


@dataclass(frozen=True)
class ScheduledFunction:
    name: str
    function: str
    schedule_parameter: str


@dataclass(frozen=True)
class StageRegistry:
    outbound: tuple[OutboundStage, ...]
    inbound: tuple[InboundRoute, ...]
    scheduled: tuple[ScheduledFunction, ...] = ()

    def binaries(self) -> set[str]:
        return (
            {s.function for s in self.outbound}
            | {r.function for r in self.inbound}
            | {s.function for s in self.scheduled}
        )


def _registry_entries(
    document: dict[str, Any], key: str, fields: tuple[str, ...]
) -> Iterator[dict[str, str]]:
    entries = document.get(key)
    if not isinstance(entries, list):
        raise ValueError(f"'{key}' is not a list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{key}[{index}] is not an object")
        missing = [f for f in fields if not isinstance(entry.get(f), str) or not entry[f]]
        if missing:
            raise ValueError(f"{key}[{index}] lacks a non-empty string {', '.join(missing)}")
        yield {f: entry[f] for f in fields}


def load_registry(path: str) -> StageRegistry:
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    if not isinstance(document, dict):
        raise ValueError("top level is not an object")
    outbound = tuple(
        OutboundStage(**e)
        for e in _registry_entries(document, "outbound", ("stage", "env_prefix", "function"))
    )
    inbound = tuple(
        InboundRoute(**e)
        for e in _registry_entries(document, "inbound", ("route", "method", "path", "function"))
    )
    # Optional: a registry without scheduled functions has none.
    scheduled = tuple(
        ScheduledFunction(**e)
        for e in (
            _registry_entries(document, "scheduled", ("name", "function", "schedule_parameter"))
            if "scheduled" in document
            else ()
        )
    )
    return StageRegistry(outbound, inbound, scheduled)


def default_registry_path(template_path: str) -> str:
    """infra/stages.json in the template's directory or the nearest one above it that has it."""
    directory = os.path.dirname(os.path.abspath(template_path))
    while True:
        candidate = os.path.join(directory, REGISTRY_PATH)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            # Not found: name the conventional place, so the error says where it was expected.
            return os.path.join(os.path.dirname(os.path.abspath(template_path)), REGISTRY_PATH)
        directory = parent


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    rule: str
    where: str
    ok: bool
    message: str


class Checker:
    def __init__(self, template: dict[str, Any], registry: StageRegistry | None = None) -> None:
        self.template = template
        self.registry = registry
        self.resources: dict[str, Any] = _mapping(template.get("Resources"))
        self.parameters: dict[str, Any] = _mapping(template.get("Parameters"))
        self.globals: dict[str, Any] = _mapping(template.get("Globals"))
        self.results: list[Result] = []

    def record(self, rule: str, where: str, ok: bool, message: str) -> None:
        self.results.append(Result(rule, where, ok, message))

    def run(self) -> list[Result]:
        self.check_iam()
        self.check_sqs_sources()
        self.check_noecho()
        self.check_access_logs()
        self.check_function_roles()
        self.check_role_scope()
        self.check_sam_roles()
        self.check_stage_registry()
        self.check_alarm_actions()
        self.check_alarm_coverage()
        self.check_function_logging()
        self.check_architecture()
        self.check_resource_names()
        self.check_dashboard()
        self.check_secret_patterns()
        return self.results

    # ---- value helpers -----------------------------------------------------------------------

    def props(self, logical_id: str) -> dict[str, Any]:
        return _mapping(_mapping(self.resources.get(logical_id)).get("Properties"))

    def rtype(self, logical_id: str) -> str | None:
        resource = self.resources.get(logical_id)
        return resource.get("Type") if isinstance(resource, dict) else None

    def scalar(self, value: Any) -> Any:
        """A literal value, or a Ref to a parameter resolved to its Default; None if unknown."""
        if isinstance(value, dict) and set(value) == {"Ref"}:
            param = self.parameters.get(value["Ref"])
            if isinstance(param, dict) and "Default" in param:
                return param["Default"]
            return None
        if isinstance(value, (str, int, float, bool)):
            return value
        return None

    def target(self, value: Any) -> str | None:
        """The logical id a Ref / GetAtt / Sub("${Id.Arn}") points at, if it is in Resources."""
        candidate: Any = None
        if isinstance(value, dict):
            if "Ref" in value:
                candidate = value["Ref"]
            elif "Fn::GetAtt" in value and isinstance(value["Fn::GetAtt"], list):
                candidate = value["Fn::GetAtt"][0] if value["Fn::GetAtt"] else None
            elif "Fn::Sub" in value:
                text = value["Fn::Sub"]
                text = text[0] if isinstance(text, list) and text else text
                match = re.fullmatch(r"\$\{([A-Za-z0-9]+)(\.[A-Za-z0-9.]+)?\}", str(text))
                candidate = match.group(1) if match else None
        return candidate if isinstance(candidate, str) and candidate in self.resources else None

    def literal_strings(self, value: Any) -> Iterator[str]:
        """Every string a value can evaluate to, as far as it is knowable from the template.

        Sub templates are returned verbatim, Join parts that are not literal become "${?}", both
        branches of an If are followed, and a Ref to a parameter yields its Default.
        """
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for item in value:
                yield from self.literal_strings(item)
        elif isinstance(value, dict):
            if "Fn::Sub" in value:
                text = value["Fn::Sub"]
                text = text[0] if isinstance(text, list) and text else text
                if isinstance(text, str):
                    yield text
            elif "Fn::Join" in value and isinstance(value["Fn::Join"], list):
                delimiter, parts = (value["Fn::Join"] + ["", []])[:2]
                if isinstance(parts, list):
                    rendered = [next(self.literal_strings(part), "${?}") for part in parts]
                    yield str(delimiter).join(rendered)
            elif "Fn::If" in value and isinstance(value["Fn::If"], list):
                for branch in value["Fn::If"][1:]:
                    yield from self.literal_strings(branch)
            elif "Ref" in value:
                default = self.scalar(value)
                if isinstance(default, str):
                    yield default

    # ---- iam-wildcard -------------------------------------------------------------------------

    def policy_documents(self) -> Iterator[tuple[str, Any]]:
        for logical_id, resource in self.resources.items():
            rtype = self.rtype(logical_id)
            props = self.props(logical_id)
            if rtype in SAM_POLICY_RESOURCES:
                policies = props.get("Policies")
                for item in policies if isinstance(policies, list) else [policies]:
                    # Strings are managed policy names/ARNs and other dicts are SAM policy
                    # templates: neither is written here, so neither is ours to check.
                    if isinstance(item, dict) and "Statement" in item:
                        yield logical_id, item
            elif rtype in IAM_INLINE_RESOURCES:
                for index, policy in enumerate(_list(props.get("Policies"))):
                    name = _mapping(policy).get("PolicyName", index)
                    yield f"{logical_id}.{name}", _mapping(policy).get("PolicyDocument")
            elif rtype in IAM_DOC_RESOURCES:
                yield logical_id, props.get("PolicyDocument")

    def check_iam(self) -> None:
        for where, document in self.policy_documents():
            statements = _mapping(document).get("Statement")
            for index, statement in enumerate(_list(statements)):
                statement = _mapping(statement)
                label = f"{where} statement {statement.get('Sid', index)}"
                if statement.get("Effect", "Allow") != "Allow":
                    continue  # a broad Deny only narrows access
                problems = []
                for key in ("NotAction", "NotResource"):
                    if key in statement:
                        problems.append(f"Allow with {key} grants everything not listed")
                for key in ("Action", "Resource"):
                    for text in self.literal_strings(statement.get(key)):
                        if text.strip() == "*" or text.strip().endswith(":*"):
                            problems.append(f"{key} {text!r} is a wildcard")
                self.record(
                    "iam-wildcard",
                    label,
                    not problems,
                    "; ".join(problems) or "actions and resources are named",
                )

    # ---- sqs-visibility, queue-dlq, batch-failures --------------------------------------------

    def function_timeout(self, function_id: str) -> Any:
        props = self.props(function_id)
        if "Timeout" in props:
            return self.scalar(props["Timeout"])
        if self.rtype(function_id) == "AWS::Serverless::Function":
            global_timeout = _mapping(self.globals.get("Function")).get("Timeout")
            if global_timeout is not None:
                return self.scalar(global_timeout)
        return DEFAULT_LAMBDA_TIMEOUT

    def sqs_sources(self) -> Iterator[tuple[str, str | None, Any, str | None]]:
        """(where, queue logical id, FunctionResponseTypes, function logical id) per SQS source."""
        for logical_id in self.resources:
            rtype = self.rtype(logical_id)
            props = self.props(logical_id)
            if rtype == "AWS::Serverless::Function":
                for event_name, event in _mapping(props.get("Events")).items():
                    event = _mapping(event)
                    if event.get("Type") != "SQS":
                        continue
                    event_props = _mapping(event.get("Properties"))
                    yield (
                        f"{logical_id} event {event_name}",
                        self.target(event_props.get("Queue")),
                        event_props.get("FunctionResponseTypes"),
                        logical_id,
                    )
            elif rtype == "AWS::Lambda::EventSourceMapping":
                source = props.get("EventSourceArn")
                queue_id = self.target(source)
                is_sqs = (queue_id is not None and self.rtype(queue_id) == "AWS::SQS::Queue") or any(
                    ":sqs:" in text for text in self.literal_strings(source)
                )
                if not is_sqs:
                    continue
                function_id = self.target(props.get("FunctionName"))
                if function_id is not None and self.rtype(function_id) not in FUNCTION_TYPES:
                    function_id = None
                yield logical_id, queue_id, props.get("FunctionResponseTypes"), function_id

    def batch_sizes(self) -> dict[str, int | None]:
        """The largest BatchSize any SQS source reads each queue with (None: not a number)."""
        sizes: dict[str, int | None] = {}
        for logical_id in self.resources:
            props = self.props(logical_id)
            if self.rtype(logical_id) == "AWS::Serverless::Function":
                sources = [
                    (self.target(p.get("Queue")), p.get("BatchSize"))
                    for p in (
                        _mapping(_mapping(e).get("Properties"))
                        for e in _mapping(props.get("Events")).values()
                        if _mapping(e).get("Type") == "SQS"
                    )
                ]
            elif self.rtype(logical_id) == "AWS::Lambda::EventSourceMapping":
                sources = [(self.target(props.get("EventSourceArn")), props.get("BatchSize"))]
            else:
                continue
            for queue_id, size in sources:
                if queue_id is None:
                    continue
                n = _int(self.scalar(size)) if size is not None else DEFAULT_SQS_BATCH_SIZE
                known = sizes.get(queue_id, 0)
                sizes[queue_id] = None if n is None or known is None else max(known, n)
        return sizes

    def check_sqs_sources(self) -> None:
        source_queues: dict[str, str] = {}
        self.source_batch_sizes = self.batch_sizes()
        for where, queue_id, response_types, function_id in self.sqs_sources():
            types = response_types if isinstance(response_types, list) else [response_types]
            self.record(
                "batch-failures",
                where,
                "ReportBatchItemFailures" in types,
                "FunctionResponseTypes includes ReportBatchItemFailures"
                if "ReportBatchItemFailures" in types
                else "FunctionResponseTypes lacks ReportBatchItemFailures: one failure retries the whole batch",
            )

            if queue_id is None or self.rtype(queue_id) != "AWS::SQS::Queue":
                self.record(
                    "sqs-visibility",
                    where,
                    False,
                    "source queue is not an AWS::SQS::Queue in this template, so it cannot be checked",
                )
                continue
            source_queues.setdefault(queue_id, where)

            timeout = self.function_timeout(function_id) if function_id else None
            visibility = self.scalar(
                self.props(queue_id).get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT)
            )
            timeout_n, visibility_n = _int(timeout), _int(visibility)
            if timeout_n is None or visibility_n is None:
                self.record(
                    "sqs-visibility",
                    where,
                    False,
                    f"cannot resolve function Timeout ({timeout!r}) or {queue_id} VisibilityTimeout "
                    f"({visibility!r}) to a number",
                )
                continue
            needed = VISIBILITY_FACTOR * timeout_n
            self.record(
                "sqs-visibility",
                where,
                visibility_n >= needed,
                f"{queue_id} VisibilityTimeout {visibility_n} "
                + (">=" if visibility_n >= needed else "<")
                + f" {VISIBILITY_FACTOR} x function Timeout {timeout_n} = {needed}",
            )

        for queue_id, where in source_queues.items():
            self.record("queue-dlq", f"{queue_id} (source of {where})", *self.dlq_problem(queue_id))

    def dlq_problem(self, queue_id: str) -> tuple[bool, str]:
        props = self.props(queue_id)
        fifo = _truthy(self.scalar(props.get("FifoQueue")))
        redrive = props.get("RedrivePolicy")
        if isinstance(redrive, str):
            try:
                redrive = json.loads(redrive)
            except json.JSONDecodeError:
                return False, "RedrivePolicy is not valid JSON"
        if not isinstance(redrive, dict):
            return False, "no RedrivePolicy: failed messages are retried until retention drops them"
        problems = []
        count = _int(self.scalar(redrive.get("maxReceiveCount")))
        if count is None or count < MIN_MAX_RECEIVE_COUNT:
            problems.append(
                f"maxReceiveCount {redrive.get('maxReceiveCount')!r} < {MIN_MAX_RECEIVE_COUNT} "
                "(throttling alone can dead-letter messages)"
            )
        if RETRY_PARAMETER in self.parameters and count is not None:
            max_attempts = _int(_mapping(self.parameters[RETRY_PARAMETER]).get("MaxValue"))
            batch = self.source_batch_sizes.get(queue_id, DEFAULT_SQS_BATCH_SIZE)
            if max_attempts is None or batch is None:
                problems.append(
                    f"cannot resolve {RETRY_PARAMETER} MaxValue or the source's BatchSize to a "
                    "number, so maxReceiveCount cannot be shown to outlast the retry budget"
                )
            elif count < max_attempts * batch:
                problems.append(
                    f"maxReceiveCount {count} < {RETRY_PARAMETER} MaxValue {max_attempts} x "
                    f"BatchSize {batch} = {max_attempts * batch} (a message held back behind "
                    "failing ones of its group could be redriven, without a reason, first)"
                )
        target = redrive.get("deadLetterTargetArn")
        dlq_id = self.target(target)
        if dlq_id is not None and self.rtype(dlq_id) == "AWS::SQS::Queue":
            dlq_fifo = _truthy(self.scalar(self.props(dlq_id).get("FifoQueue")))
            described = f"DLQ {dlq_id}"
        else:
            texts = list(self.literal_strings(target))
            dlq_fifo = bool(texts) and all(t.endswith(".fifo") for t in texts)
            described = f"DLQ {texts[0] if texts else target!r}"
            if not texts:
                problems.append("deadLetterTargetArn cannot be resolved")
        if fifo and not dlq_fifo:
            problems.append(f"FIFO source queue but {described} is not FIFO")
        if problems:
            return False, "; ".join(problems)
        kind = "FIFO " if fifo else ""
        return True, f"redrives to {kind}{described} after {count} receives"

    # ---- noecho -------------------------------------------------------------------------------

    def check_noecho(self) -> None:
        for name, param in self.parameters.items():
            if not SECRET_PARAM.search(name):
                continue
            ok = _truthy(_mapping(param).get("NoEcho"))
            self.record(
                "noecho",
                f"parameter {name}",
                ok,
                "NoEcho: true" if ok else "looks like a secret but lacks NoEcho: true",
            )

    # ---- access-log-path ----------------------------------------------------------------------

    def access_log_formats(self) -> Iterator[tuple[str, Any]]:
        for section in ("HttpApi", "Api"):
            settings = _mapping(_mapping(self.globals.get(section)).get("AccessLogSetting"))
            settings = settings or _mapping(_mapping(self.globals.get(section)).get("AccessLogSettings"))
            if "Format" in settings:
                yield f"Globals.{section}", settings["Format"]
        for logical_id in self.resources:
            rtype = self.rtype(logical_id)
            props = self.props(logical_id)
            if rtype in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Stage"):
                settings = _mapping(props.get("AccessLogSettings"))
            elif rtype in ("AWS::Serverless::Api", "AWS::ApiGateway::Stage"):
                settings = _mapping(props.get("AccessLogSetting"))
            else:
                continue
            if "Format" in settings:
                yield logical_id, settings["Format"]

    def check_access_logs(self) -> None:
        for where, log_format in self.access_log_formats():
            texts = list(self.literal_strings(log_format))
            leaked = [t for t in texts if CONTEXT_PATH.search(t)]
            self.record(
                "access-log-path",
                f"{where} access log",
                not leaked,
                "records $context.path, which contains the webhook token; log $context.routeKey"
                if leaked
                else "does not record $context.path",
            )


    # ---- function-role ------------------------------------------------------------------------

    def functions(self) -> Iterator[str]:
        for logical_id in self.resources:
            if self.rtype(logical_id) == "AWS::Serverless::Function":
                yield logical_id

    def function_role(self, function_id: str) -> str | None:
        """The AWS::IAM::Role of this template the function's `Role` points at, if any."""
        role = self.target(self.props(function_id).get("Role"))
        return role if role is not None and self.rtype(role) == "AWS::IAM::Role" else None

    def attached_policies(self, role_id: str) -> Iterator[tuple[str, str | None, Any]]:
        """(where, type, document) of every policy resource that lists `role_id` in its Roles."""
        for logical_id in self.resources:
            rtype = self.rtype(logical_id)
            if rtype not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                continue
            props = self.props(logical_id)
            if any(self.target(r) == role_id for r in _list(props.get("Roles"))):
                yield logical_id, rtype, props.get("PolicyDocument")

    def trust_problems(self, document: Any) -> list[str]:
        statements = _list(_mapping(document).get("Statement"))
        if not statements:
            return ["AssumeRolePolicyDocument has no statement"]
        problems = []
        for statement in statements:
            statement = _mapping(statement)
            if statement.get("Effect", "Allow") != "Allow":
                continue
            principal = _mapping(statement.get("Principal"))
            services = [str(s) for s in _list(principal.get("Service"))]
            others = sorted(k for k in principal if k != "Service")
            if others or services != [LAMBDA_PRINCIPAL]:
                problems.append(
                    f"trust policy admits {others or services}, not only {LAMBDA_PRINCIPAL}"
                )
        return problems

    def check_function_roles(self) -> None:
        global_policies = _mapping(self.globals.get("Function")).get("Policies")
        if global_policies is not None:
            self.record(
                "function-role",
                "Globals.Function",
                False,
                "Policies in Globals make SAM generate roles with AWS-managed policies",
            )
        users: dict[str, list[str]] = {}
        for function_id in self.functions():
            props = self.props(function_id)
            problems = []
            if "Policies" in props:
                problems.append(
                    "has SAM Policies: SAM then generates a role with AWS-managed policies "
                    "(AWSLambdaBasicExecutionRole, AWSLambdaSQSQueueExecutionRole); give it an "
                    "explicit AWS::IAM::Role instead"
                )
            role = self.function_role(function_id)
            if "Role" not in props:
                problems.append("no Role: SAM would generate one with AWS-managed policies")
            elif role is None:
                problems.append(
                    "Role is not !GetAtt of an AWS::IAM::Role in this template, so what it grants "
                    "cannot be checked"
                )
            else:
                users.setdefault(role, []).append(function_id)
                role_props = self.props(role)
                managed = _list(role_props.get("ManagedPolicyArns"))
                if managed:
                    named = [next(self.literal_strings(m), repr(m)) for m in managed]
                    problems.append(f"{role} attaches managed policies {named}")
                for where, rtype, _ in self.attached_policies(role):
                    if rtype == "AWS::IAM::ManagedPolicy":
                        problems.append(f"{role} has the managed policy {where} attached")
                trust = role_props.get("AssumeRolePolicyDocument")
                problems.extend(f"{role}: {p}" for p in self.trust_problems(trust))
            self.record(
                "function-role",
                function_id,
                not problems,
                "; ".join(problems) or f"own role {role}, inline policies only",
            )
        for role, functions in users.items():
            if len(functions) > 1:
                self.record(
                    "function-role",
                    f"role {role}",
                    False,
                    f"shared by {', '.join(functions)}: each function needs its own role, or one "
                    "function's stage grants leak to another",
                )

    def check_sam_roles(self) -> None:
        """Transforms the template offline (as cfn-lint does) and checks the roles SAM emits."""
        try:
            from samtranslator.translator.transform import transform  # type: ignore
        except ImportError:
            print("note: aws-sam-translator not importable; SAM output unchecked", file=sys.stderr)
            return
        if "AWS::Serverless-2016-10-31" not in _list(self.template.get("Transform")):
            return

        class NoManagedPolicies:
            def load(self) -> dict[str, str]:
                return {}

        document = copy.deepcopy(self.template)
        for resource in _mapping(document.get("Resources")).values():
            if _mapping(resource).get("Type") == "AWS::Serverless::Function":
                # Build-time paths are not S3 URIs; the code location does not affect roles.
                _mapping(resource.get("Properties"))["CodeUri"] = "s3://bucket/key"
        # Offline: the translator asks boto3 for a region (for partition names) unless one is set.
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        pseudo = {
            "AWS::Region": "us-east-1",
            "AWS::Partition": "aws",
            "AWS::AccountId": "123456789012",
        }
        try:
            output = transform(document, pseudo, NoManagedPolicies())
        except Exception as error:  # noqa: BLE001 - any translator failure is a finding
            message = f"SAM cannot transform it: {error}"
            self.record("function-role", "SAM transform", False, message)
            return
        for logical_id, resource in _mapping(output.get("Resources")).items():
            resource = _mapping(resource)
            if resource.get("Type") != "AWS::IAM::Role":
                continue
            managed = _list(_mapping(resource.get("Properties")).get("ManagedPolicyArns"))
            self.record(
                "function-role",
                f"SAM output role {logical_id}",
                not managed,
                f"SAM attaches managed policies {managed}" if managed else "no managed policy",
            )
        # What SAM made of Globals and each function's LoggingConfig: the deployed function's.
        log_groups = {r for r in self.resources if self.rtype(r) == "AWS::Logs::LogGroup"}
        for logical_id, resource in _mapping(output.get("Resources")).items():
            resource = _mapping(resource)
            if resource.get("Type") != "AWS::Lambda::Function":
                continue
            config = _mapping(resource.get("Properties")).get("LoggingConfig")
            problems = self.logging_problems(config, log_groups)
            self.record(
                "function-logging",
                f"SAM output function {logical_id}",
                not problems,
                "; ".join(problems) or "LoggingConfig with levels and its own log group",
            )

    # ---- role-scope ---------------------------------------------------------------------------

    def resource_target(self, value: Any) -> str | None:
        """The template resource a policy Resource names (GetAtt, Ref, or Sub of its Arn, an index
        of a table included); None for a literal ARN or anything else."""
        target = self.target(value)
        if target is not None:
            return target
        if isinstance(value, dict) and "Fn::Sub" in value:
            text = value["Fn::Sub"]
            text = text[0] if isinstance(text, list) and text else text
            match = SUB_ARN.fullmatch(str(text))
            if match and match.group(1) in self.resources:
                return match.group(1)
        return None

    def role_statements(self, role_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        documents: list[tuple[str, Any]] = []
        for index, policy in enumerate(_list(self.props(role_id).get("Policies"))):
            name = _mapping(policy).get("PolicyName", index)
            documents.append((f"{role_id}.{name}", _mapping(policy).get("PolicyDocument")))
        documents.extend((where, doc) for where, _, doc in self.attached_policies(role_id))
        for where, document in documents:
            for index, statement in enumerate(_list(_mapping(document).get("Statement"))):
                statement = _mapping(statement)
                if statement.get("Effect", "Allow") == "Allow":
                    yield f"{where} statement {statement.get('Sid', index)}", statement

    def check_role_scope(self) -> None:
        sources_of: dict[str, set[str]] = {}
        for _, queue_id, _, function_id in self.sqs_sources():
            if queue_id is not None and function_id is not None:
                sources_of.setdefault(function_id, set()).add(queue_id)
        stage_queues = set().union(*sources_of.values()) if sources_of else set()
        dlq_of = {queue: self.dlq_of(queue) for queue in stage_queues}
        all_dlqs = {dlq for dlq in dlq_of.values() if dlq is not None}

        for function_id in self.functions():
            role = self.function_role(function_id)
            if role is None:
                continue  # function-role reports it
            logging = _mapping(self.props(function_id).get("LoggingConfig"))
            log_group = self.target(logging.get("LogGroup"))
            if log_group is None or self.rtype(log_group) != "AWS::Logs::LogGroup":
                self.record(
                    "role-scope",
                    f"{function_id} LoggingConfig",
                    False,
                    "LoggingConfig.LogGroup does not !Ref a log group of this template: the function "
                    "would log to /aws/lambda/<name>, which its role cannot (and should not) write",
                )
                log_group = None
            sources = sources_of.get(function_id, set())
            dlqs = {dlq_of[q] for q in sources if dlq_of.get(q) is not None}
            console = self.binary_of(function_id) == CONSOLE_BINARY
            for where, statement in self.role_statements(role):
                actions = [a.lower() for a in self.literal_strings(statement.get("Action"))]
                resources = _list(statement.get("Resource"))
                targets = [self.resource_target(r) for r in resources]
                problems = []
                if None in targets:
                    unresolved = [r for r, t in zip(resources, targets) if t is None]
                    problems.append(f"resources {unresolved} are not resources of this template")
                named = {t for t in targets if t is not None}
                for action in actions:
                    service = action.split(":", 1)[0]
                    if service not in ROLE_SERVICES:
                        problems.append(f"{action}: no function here uses {service}")
                        continue
                    if service == "logs":
                        allowed = {log_group} if log_group else set()
                        what = f"its own log group {log_group}"
                    elif service == "sqs" and console and action in CONSOLE_DLQ_ACTIONS:
                        allowed, what = all_dlqs, f"the stage DLQs {sorted(all_dlqs)}"
                    elif service == "sqs" and sources:
                        allowed, what = (
                            (dlqs, f"its own DLQ {sorted(dlqs)}")
                            if action == SQS_SEND
                            else (sources, f"its own queue {sorted(sources)}")
                        )
                    elif service == "sqs":
                        allowed, what = (
                            (stage_queues - all_dlqs, "stage queues")
                            if action == SQS_SEND
                            else (set(), "a queue this function consumes (it consumes none)")
                        )
                    else:
                        allowed = {t for t in named if self.rtype(t) == "AWS::DynamoDB::Table"}
                        what = "tables of this template"
                        if console and action not in CONSOLE_TABLE_ACTIONS:
                            problems.append(
                                f"{action}: the operator console only reads the table "
                                f"({', '.join(sorted(CONSOLE_TABLE_ACTIONS))})"
                            )
                    stray = sorted(named - allowed)
                    if stray:
                        problems.append(f"{action} on {stray}: allowed only on {what}")
                self.record(
                    "role-scope",
                    f"{function_id} {where}",
                    not problems,
                    "; ".join(dict.fromkeys(problems)) or "stays within its own stage",
                )

    def dlq_of(self, queue_id: str) -> str | None:
        redrive = self.props(queue_id).get("RedrivePolicy")
        if isinstance(redrive, str):
            try:
                redrive = json.loads(redrive)
            except json.JSONDecodeError:
                return None
        dlq = self.target(_mapping(redrive).get("deadLetterTargetArn"))
        return dlq if dlq is not None and self.rtype(dlq) == "AWS::SQS::Queue" else None

    # ---- stage-registry -----------------------------------------------------------------------

    def schedule_rules(self, function_id: str) -> list[str]:
        """The AWS::Events::Rule resources with a ScheduleExpression that target the function."""
        return [
            rule_id
            for rule_id in self.resources
            if self.rtype(rule_id) == "AWS::Events::Rule"
            and "ScheduleExpression" in self.props(rule_id)
            and any(
                self.target(_mapping(t).get("Arn")) == function_id
                for t in _list(self.props(rule_id).get("Targets"))
            )
        ]

    def events_may_invoke(self, function_id: str) -> bool:
        """Whether an AWS::Lambda::Permission lets events.amazonaws.com invoke the function."""
        return any(
            self.rtype(perm_id) == "AWS::Lambda::Permission"
            and self.target(self.props(perm_id).get("FunctionName")) == function_id
            and self.scalar(self.props(perm_id).get("Principal")) == "events.amazonaws.com"
            for perm_id in self.resources
        )

    def binary_of(self, function_id: str) -> str | None:
        """The binary cargo-lambda builds for a function: Metadata.BuildProperties.Binary."""
        metadata = _mapping(_mapping(self.resources.get(function_id)).get("Metadata"))
        binary = self.scalar(_mapping(metadata.get("BuildProperties")).get("Binary"))
        return binary if isinstance(binary, str) and binary else None

    def environment(self, function_id: str) -> dict[str, Any]:
        """The function's variables: Globals.Function's, overridden by its own (as SAM merges)."""
        global_env = _mapping(_mapping(self.globals.get("Function")).get("Environment"))
        variables = dict(_mapping(global_env.get("Variables")))
        own = _mapping(_mapping(self.props(function_id).get("Environment")).get("Variables"))
        variables.update(own)
        return variables

    def queue_url_of(self, value: Any) -> str | None:
        """The queue of this template whose URL a value is (`!Ref Q` or `!GetAtt Q.QueueUrl`)."""
        candidate: Any = None
        if isinstance(value, dict) and set(value) == {"Ref"}:
            candidate = value["Ref"]
        elif isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
            parts = value["Fn::GetAtt"]
            if isinstance(parts, list) and len(parts) == 2 and parts[1] == "QueueUrl":
                candidate = parts[0]
        if isinstance(candidate, str) and self.rtype(candidate) == "AWS::SQS::Queue":
            return candidate
        return None

    def url_problem(self, env: dict[str, Any], var: str, queue_id: str, whose: str) -> str | None:
        if var not in env:
            return f"{whose} environment has no {var} (the URL of {queue_id})"
        got = self.queue_url_of(env[var])
        if got != queue_id:
            shown = f"the URL of {got}" if got else repr(env[var])
            return f"{whose} {var} is {shown}, not the URL of {queue_id}"
        return None

    def sole_builder(self, binary: str, builders: dict[str, list[str]], where: str) -> str | None:
        """The one function building `binary`; records a failure and returns None otherwise."""
        ids = builders.get(binary, [])
        if len(ids) == 1:
            return ids[0]
        self.record(
            "stage-registry",
            where,
            False,
            f"no function builds {binary} (Metadata.BuildProperties.Binary)"
            if not ids
            else f"{binary} is built by {len(ids)} functions ({', '.join(ids)}); exactly one may",
        )
        return None

    def send_targets(self, function_id: str) -> set[str]:
        """The template resources the function's role may sqs:SendMessage to."""
        role = self.function_role(function_id)
        targets: set[str] = set()
        for _, statement in self.role_statements(role) if role else []:
            actions = {a.lower() for a in self.literal_strings(statement.get("Action"))}
            if SQS_SEND in actions:
                targets.update(
                    t for t in map(self.resource_target, _list(statement.get("Resource"))) if t
                )
        return targets

    def check_stage_registry(self) -> None:
        if self.registry is None:
            return
        rule = "stage-registry"
        registry = self.registry
        builders: dict[str, list[str]] = {}
        for function_id in self.functions():
            binary = self.binary_of(function_id)
            if binary is None:
                self.record(
                    rule,
                    function_id,
                    False,
                    "no Metadata.BuildProperties.Binary, so which registry entry it builds is "
                    "unknown (cargo-lambda: BuildMethod rust-cargolambda, Binary <name>)",
                )
            else:
                builders.setdefault(binary, []).append(function_id)
        known = registry.binaries() | {WEBHOOK_BINARY, CONSOLE_BINARY}
        for binary, ids in builders.items():
            if binary not in known:
                self.record(
                    rule,
                    ", ".join(ids),
                    False,
                    f"builds {binary}, which the stage registry (infra/stages.json, from "
                    "shared/src/registry.rs) does not list: register the stage or drop the "
                    "function",
                )

        sources: dict[str, list[str | None]] = {}
        for _, queue_id, _, function_id in self.sqs_sources():
            if function_id is not None:
                sources.setdefault(function_id, []).append(queue_id)
        webhook = self.sole_builder(WEBHOOK_BINARY, builders, f"webhook {WEBHOOK_BINARY}")
        webhook_env = self.environment(webhook) if webhook else {}
        webhook_sends = self.send_targets(webhook) if webhook else set()
        global_vars = _mapping(
            _mapping(_mapping(self.globals.get("Function")).get("Environment")).get("Variables")
        )
        own_vars = {
            f: _mapping(_mapping(self.props(f).get("Environment")).get("Variables"))
            for f in self.functions()
        }
        passes_dlq_urls = any(
            name.endswith("_DLQ_URL") for env in [global_vars, *own_vars.values()] for name in env
        )

        # Queues a stage owns: its consumer's source and DLQ, and whatever its URL variables name
        # (so a stage whose function is missing does not also make its queue look orphaned).
        owner: dict[str, str] = {}
        for stage in registry.outbound:
            for env in (global_vars, webhook_env):
                for var in (stage.queue_var, stage.dlq_var):
                    queue = self.queue_url_of(env.get(var))
                    if queue is not None:
                        owner.setdefault(queue, stage.stage)

        for stage in registry.outbound:
            where = f"outbound stage {stage.stage}"
            function_id = self.sole_builder(stage.function, builders, where)
            if function_id is None:
                continue
            problems: list[str] = []
            queues = sources.get(function_id, [])
            queue_id = dlq = None
            if len(queues) != 1:
                problems.append(
                    f"{function_id} has {len(queues)} SQS event sources; a stage consumes exactly "
                    "its own queue"
                )
            elif queues[0] is None:
                problems.append(f"the SQS source of {function_id} is not a queue of this template")
            else:
                queue_id = queues[0]
            if queue_id is not None:
                if not _truthy(self.scalar(self.props(queue_id).get("FifoQueue"))):
                    problems.append(f"source queue {queue_id} is not FIFO (FifoQueue: true)")
                dlq = self.dlq_of(queue_id)
                if dlq is None:
                    problems.append(
                        f"source queue {queue_id} redrives to no queue of this template"
                    )
                elif not _truthy(self.scalar(self.props(dlq).get("FifoQueue"))):
                    problems.append(f"DLQ {dlq} of {queue_id} is not FIFO")
                for resource in (queue_id, dlq):
                    if resource is None:
                        continue
                    other = owner.setdefault(resource, stage.stage)
                    if other != stage.stage:
                        problems.append(
                            f"{resource} is also claimed by stage {other} (by its consumer or its "
                            "URL variables)"
                        )
                env = self.environment(function_id)
                found = [self.url_problem(env, stage.queue_var, queue_id, function_id)]
                if passes_dlq_urls and dlq is not None:
                    found.append(self.url_problem(env, stage.dlq_var, dlq, function_id))
                if webhook is not None:
                    whose = f"webhook {webhook}"
                    found.append(self.url_problem(webhook_env, stage.queue_var, queue_id, whose))
                    if self.function_role(webhook) and queue_id not in webhook_sends:
                        found.append(
                            f"webhook {webhook}'s role may not sqs:SendMessage to {queue_id}"
                        )
                problems.extend(p for p in found if p)
            self.record(
                rule,
                where,
                not problems,
                "; ".join(problems)
                or f"{function_id} consumes FIFO {queue_id} (FIFO DLQ {dlq}); {stage.queue_var} "
                "reaches it and the webhook",
            )

        for route in registry.inbound:
            where = f"inbound route {route.route}"
            function_id = self.sole_builder(route.function, builders, where)
            if function_id is None:
                continue
            routes = []
            for event in _mapping(self.props(function_id).get("Events")).values():
                event = _mapping(event)
                if event.get("Type") == "HttpApi":
                    event_props = _mapping(event.get("Properties"))
                    routes.append(
                        f"{str(self.scalar(event_props.get('Method'))).upper()} "
                        f"{self.scalar(event_props.get('Path'))}"
                    )
            wanted = f"{route.method.upper()} {route.path}"
            self.record(
                rule,
                where,
                wanted in routes,
                f"{function_id} serves {wanted}"
                if wanted in routes
                else f"{function_id} has no HttpApi event {wanted} (it has {routes or 'none'})",
            )

        parameters = _mapping(self.template.get("Parameters"))
        for scheduled in registry.scheduled:
            where = f"scheduled function {scheduled.name}"
            function_id = self.sole_builder(scheduled.function, builders, where)
            if function_id is None:
                continue
            expressions = []
            for event in _mapping(self.props(function_id).get("Events")).values():
                event = _mapping(event)
                if event.get("Type") in ("Schedule", "ScheduleV2"):
                    event_props = _mapping(event.get("Properties"))
                    expressions.append(
                        event_props.get("Schedule", event_props.get("ScheduleExpression"))
                    )
            # Or an AWS::Events::Rule of its own that targets it (so a Condition can leave the
            # schedule out altogether), with a permission for EventBridge to invoke it.
            rules = self.schedule_rules(function_id)
            expressions.extend(self.props(r).get("ScheduleExpression") for r in rules)
            wanted = {"Ref": scheduled.schedule_parameter}
            problems = []
            if scheduled.schedule_parameter not in parameters:
                problems.append(f"the template has no parameter {scheduled.schedule_parameter}")
            if expressions != [wanted]:
                problems.append(
                    f"{function_id} must have exactly one Schedule event with Schedule: "
                    f"!Ref {scheduled.schedule_parameter}, or one AWS::Events::Rule targeting it "
                    f"with that ScheduleExpression (it has {expressions or 'none'})"
                )
            if rules and not self.events_may_invoke(function_id):
                problems.append(
                    f"no AWS::Lambda::Permission lets events.amazonaws.com invoke {function_id}"
                )
            self.record(
                rule,
                where,
                not problems,
                "; ".join(problems)
                or f"{function_id} runs on !Ref {scheduled.schedule_parameter}",
            )

        for queue_id in self.resources:
            if self.rtype(queue_id) == "AWS::SQS::Queue" and queue_id not in owner:
                self.record(
                    rule,
                    queue_id,
                    False,
                    "is neither the queue nor the DLQ of a registry stage (infra/stages.json)",
                )
        prefixes = {stage.env_prefix for stage in registry.outbound}
        for where, env in [("Globals.Function", global_vars), *own_vars.items()]:
            for name in env:
                match = re.fullmatch(r"(.+)_(?:QUEUE|DLQ)_URL", name)
                if match and match.group(1) not in prefixes:
                    self.record(
                        rule,
                        f"{where} {name}",
                        False,
                        f"no registry stage has env_prefix {match.group(1)} (known: "
                        f"{', '.join(sorted(prefixes))})",
                    )


    # ---- alarm-actions, alarm-coverage --------------------------------------------------------

    def alarms(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id in self.resources:
            if self.rtype(logical_id) == "AWS::CloudWatch::Alarm":
                yield logical_id, self.props(logical_id)

    def check_alarm_actions(self) -> None:
        for alarm_id, props in self.alarms():
            problems = []
            for key in ("AlarmActions", "OKActions"):
                value = props.get(key)
                if not isinstance(value, list):
                    problems.append(
                        f"{key} is not a plain list (a condition can leave the alarm without one)"
                    )
                    continue
                topics = [
                    t for t in map(self.target, value) if t and self.rtype(t) == "AWS::SNS::Topic"
                ]
                if not topics:
                    problems.append(f"{key} names no SNS topic of this template")
            self.record(
                "alarm-actions",
                alarm_id,
                not problems,
                "; ".join(problems) or "notifies the template's SNS topic",
            )

    def alarm_targets(self, namespace: str, metric: str, dimension: str) -> set[str]:
        """Resources some alarm watches `namespace`/`metric` of, by the `dimension` naming them."""
        found: set[str] = set()
        for _, props in self.alarms():
            if props.get("Namespace") != namespace or props.get("MetricName") != metric:
                continue
            for item in _list(props.get("Dimensions")):
                item = _mapping(item)
                if item.get("Name") == dimension:
                    target = self.target(item.get("Value"))
                    if target:
                        found.add(target)
        return found

    def check_alarm_coverage(self) -> None:
        rule = "alarm-coverage"
        errors = self.alarm_targets("AWS/Lambda", "Errors", "FunctionName")
        throttles = self.alarm_targets("AWS/Lambda", "Throttles", "FunctionName")
        for function_id in self.functions():
            missing = [n for n, got in (("Errors", errors), ("Throttles", throttles)) if function_id not in got]
            self.record(
                rule,
                function_id,
                not missing,
                f"no {' or '.join(missing)} alarm (AWS/Lambda, FunctionName !Ref {function_id})"
                if missing
                else "Errors and Throttles alarms",
            )
        age = self.alarm_targets("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName")
        depth = self.alarm_targets("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName")
        sources = {q for _, q, _, _ in self.sqs_sources() if q and self.rtype(q) == "AWS::SQS::Queue"}
        for queue_id in sorted(sources):
            self.record(
                rule,
                queue_id,
                queue_id in age,
                "ApproximateAgeOfOldestMessage alarm"
                if queue_id in age
                else "source queue without an ApproximateAgeOfOldestMessage alarm: a stuck "
                "stage goes unnoticed until messages expire",
            )
            dlq = self.dlq_of(queue_id)
            if dlq is not None:
                self.record(
                    rule,
                    dlq,
                    dlq in depth,
                    "ApproximateNumberOfMessagesVisible alarm"
                    if dlq in depth
                    else "DLQ without an ApproximateNumberOfMessagesVisible alarm: dead letters "
                    "go unnoticed",
                )

    # ---- function-logging, architecture -------------------------------------------------------

    def merged(self, function_id: str, key: str) -> Any:
        """A function property as SAM resolves it: maps merged over Globals.Function's, other
        values overriding them."""
        global_value = _mapping(self.globals.get("Function")).get(key)
        own = self.props(function_id).get(key)
        if isinstance(global_value, dict) and isinstance(own, dict):
            return {**global_value, **own}
        return own if own is not None else global_value

    def logging_problems(self, config: Any, log_groups: set[str]) -> list[str]:
        config = _mapping(config)
        problems = []
        if config.get("LogFormat") != "JSON":
            problems.append("LogFormat is not JSON (log levels need it)")
        for key in ("ApplicationLogLevel", "SystemLogLevel"):
            if key not in config:
                problems.append(f"no {key}: Lambda keeps INFO and above whatever RUST_LOG says")
        group = self.target(config.get("LogGroup"))
        if group is None or group not in log_groups:
            problems.append("LogGroup is not !Ref of an AWS::Logs::LogGroup of this template")
        elif "RetentionInDays" not in self.props(group):
            problems.append(f"its log group {group} has no RetentionInDays (logs kept forever)")
        return problems

    def check_function_logging(self) -> None:
        log_groups = {r for r in self.resources if self.rtype(r) == "AWS::Logs::LogGroup"}
        for function_id in self.functions():
            problems = self.logging_problems(self.merged(function_id, "LoggingConfig"), log_groups)
            if "RUST_LOG" not in self.environment(function_id):
                problems.append("no RUST_LOG in its environment")
            self.record(
                "function-logging",
                function_id,
                not problems,
                "; ".join(problems) or "JSON logs with application and system levels, own log group",
            )

    def check_architecture(self) -> None:
        for function_id in self.functions():
            value = self.merged(function_id, "Architectures")
            items = _list(value)
            problem = None
            if len(items) != 1 or not isinstance(items[0], dict) or set(items[0]) != {"Ref"}:
                problem = f"Architectures {value!r} is not [!Ref <parameter>]"
            else:
                name = items[0]["Ref"]
                allowed = _mapping(self.parameters.get(name)).get("AllowedValues")
                if name not in self.parameters:
                    problem = f"Architectures refers to {name}, which is not a parameter"
                elif not isinstance(allowed, list) or set(map(str, allowed)) != ARCHITECTURES:
                    problem = f"parameter {name} must allow exactly x86_64 and arm64 (AllowedValues)"
            self.record(
                "architecture",
                function_id,
                problem is None,
                problem or "Architectures from the stack parameter",
            )

    # ---- resource-names -----------------------------------------------------------------------

    def longest(self, value: Any) -> int | None:
        """The longest string a name value can evaluate to; None when unbounded or unknown."""
        if isinstance(value, str):
            return len(value)
        if isinstance(value, dict) and set(value) == {"Ref"}:
            name = value["Ref"]
            if name in PSEUDO_LENGTHS:
                return PSEUDO_LENGTHS[name]
            return _int(_mapping(self.parameters.get(name)).get("MaxLength"))
        if isinstance(value, dict) and "Fn::Sub" in value:
            text = value["Fn::Sub"]
            variables: dict[str, Any] = {}
            if isinstance(text, list) and text:
                variables = _mapping(text[1]) if len(text) > 1 else {}
                text = text[0]
            if not isinstance(text, str):
                return None
            total = len(SUB_VARIABLE.sub("", text))
            for name in SUB_VARIABLE.findall(text):
                length = (
                    self.longest(variables[name]) if name in variables
                    else self.longest({"Ref": name}) if "." not in name
                    else None
                )
                if length is None:
                    return None
                total += length
            return total
        if isinstance(value, dict) and "Fn::Join" in value:
            delimiter, parts = (_list(value["Fn::Join"]) + ["", []])[:2]
            lengths = [self.longest(p) for p in _list(parts)]
            if None in lengths or not isinstance(delimiter, str):
                return None
            return sum(lengths) + len(delimiter) * max(len(lengths) - 1, 0)  # type: ignore[arg-type]
        return None

    def check_resource_names(self) -> None:
        for logical_id in self.resources:
            rtype = self.rtype(logical_id)
            if rtype not in NAME_LIMITS:
                continue
            key, limit = NAME_LIMITS[rtype]
            props = self.props(logical_id)
            if key not in props:
                continue
            longest = self.longest(props[key])
            problems = []
            if longest is None:
                problems.append(
                    f"{key} cannot be shown to fit {limit} characters (a part of unknown length); "
                    "leave it out and CloudFormation names it within the limit"
                )
            elif longest > limit:
                problems.append(
                    f"{key} can be {longest} characters (the stack name counts as 128), over "
                    f"{rtype}'s {limit}; leave it out and CloudFormation names it within the limit"
                )
            if rtype == "AWS::SQS::Queue" and _truthy(self.scalar(props.get("FifoQueue"))):
                texts = list(self.literal_strings(props[key]))
                if not texts or not all(t.endswith(".fifo") for t in texts):
                    problems.append(f"a FIFO queue's {key} must end in .fifo")
            self.record(
                "resource-names",
                f"{logical_id} {key}",
                not problems,
                "; ".join(problems) or f"at most {longest} of {limit} characters",
            )

    # ---- secret-pattern -----------------------------------------------------------------------

    def check_secret_patterns(self) -> None:
        good = [
            "whsec_" + base64.b64encode(bytes(range(n))).decode() for n in (24, 32, 33, 34)
        ]
        bad = {
            "no whsec_ prefix": base64.b64encode(bytes(32)).decode(),
            "a base64 text of the wrong length": "whsec_" + "A" * 33,
            "padding inside": "whsec_" + "AAAA=AAA" * 5,
            "a character outside base64": "whsec_" + "A" * 31 + "!",
            "too short a key": "whsec_" + base64.b64encode(bytes(8)).decode(),
        }
        for name, param in self.parameters.items():
            if not name.endswith("WebhookSecret"):
                continue
            pattern = _mapping(param).get("AllowedPattern")
            problems = []
            if not isinstance(pattern, str):
                problems.append("no AllowedPattern: any text deploys, and the functions fail at init")
            else:
                try:
                    regex = re.compile(pattern)
                except re.error as error:
                    regex = None
                    problems.append(f"AllowedPattern is not a regular expression: {error}")
                if regex is not None:
                    problems.extend(
                        f"rejects a valid secret ({sample[:14]}...)"
                        for sample in good
                        if not regex.fullmatch(sample)
                    )
                    problems.extend(
                        f"accepts {why} ({sample[:14]}...)"
                        for why, sample in bad.items()
                        if regex.fullmatch(sample)
                    )
            self.record(
                "secret-pattern",
                f"parameter {name}",
                not problems,
                "; ".join(problems) or "AllowedPattern admits exactly whsec_ + padded base64",
            )

    # ---- dashboard ----------------------------------------------------------------------------

    def check_dashboard(self) -> None:
        bodies = []
        for logical_id in self.resources:
            if self.rtype(logical_id) == "AWS::CloudWatch::Dashboard":
                bodies.extend(self.literal_strings(self.props(logical_id).get("DashboardBody")))
        text = "\n".join(bodies)
        sources = {q for _, q, _, _ in self.sqs_sources() if q and self.rtype(q) == "AWS::SQS::Queue"}
        for queue_id in sorted(sources):
            dlq = self.dlq_of(queue_id)
            missing = []
            if f"${{{queue_id}.QueueName}}" not in text or "ApproximateAgeOfOldestMessage" not in text:
                missing.append(f"{queue_id}'s oldest-message age")
            if dlq and (f"${{{dlq}.QueueName}}" not in text or "ApproximateNumberOfMessagesVisible" not in text):
                missing.append(f"{dlq}'s depth")
            self.record(
                "dashboard",
                queue_id,
                not missing,
                f"no dashboard shows {' or '.join(missing)}" if missing else "on the dashboard",
            )


# --------------------------------------------------------------------------------------------
# Small coercions (CloudFormation accepts numbers and booleans as strings)
# --------------------------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", nargs="?", default="template.yaml")
    parser.add_argument(
        "--stages",
        help="the stage registry (default: infra/stages.json of the nearest directory at or "
        "above the template's that has one)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also list passed checks")
    args = parser.parse_args(argv)

    try:
        template = load_template(args.template)
    except (OSError, yaml.YAMLError, ValueError) as error:
        print(f"{args.template}: cannot read template: {error}", file=sys.stderr)
        return 2
    stages = args.stages or default_registry_path(args.template)
    try:
        registry = load_registry(stages)
    except (OSError, ValueError, TypeError) as error:
        # json.JSONDecodeError is a ValueError.
        hint = (
            "" if args.stages else f" (none at or above {args.template}'s directory; pass --stages)"
        )
        print(f"{stages}: cannot read the stage registry: {error}{hint}", file=sys.stderr)
        return 2

    results = Checker(template, registry).run()
    failed = [r for r in results if not r.ok]
    for result in results:
        if not result.ok:
            print(f"FAIL [{result.rule}] {result.where}: {result.message}")
        elif args.verbose:
            print(f"ok   [{result.rule}] {result.where}: {result.message}")
    print(
        f"{args.template}: template checks: {len(results) - len(failed)} passed, {len(failed)} failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
