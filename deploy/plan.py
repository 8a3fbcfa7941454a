"""Plan, then apply: a deploy is an ordered list of SDK calls with their exact parameters.

A plan is pure data, computed from the settings and the state read from the cloud, with no I/O:
``--dry-run`` prints it (:func:`render`), tests assert on it, and :func:`apply` makes exactly
those calls, in order, with a progress bar, waiting where a step says so. A re-run of the same
release computes an empty plan and applies nothing.

A parameter may depend on an earlier call's answer (an alarm acts on the ARN that
PutScalingPolicy returns): :class:`Ref` names that step and field; the dry run shows it as
``<PolicyARN of step 3>`` and apply substitutes it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from runners.errors import DeployError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ref:
    """The value of ``field`` in the answer of the step whose ``key`` is ``step``."""

    step: str
    field: str


OPERATION = "operation"  # Wait.waiter for a call that returns a long-running operation: its result is the answer


@dataclass(frozen=True)
class Wait:
    """After a call: a waiter of the SDK (``service``'s ``waiter``), or a poll function given to
    :func:`apply` under ``waiter`` where the SDK has none; ``params`` identify the resource."""

    service: str
    waiter: str
    params: Mapping[str, Any]
    timeout_s: float = 3600


@dataclass(frozen=True)
class Call:
    service: str  # the SDK client: "sagemaker", "application-autoscaling", "cloudwatch", "s3", ...
    operation: str  # the client's method: "create_model"
    params: Mapping[str, Any]
    why: str  # one line for the progress bar and the dry run
    key: str | None = None  # for Refs to this call's answer
    wait: Wait | None = None


@dataclass(frozen=True)
class Plan:
    calls: tuple[Call, ...] = ()
    notes: tuple[str, ...] = ()  # what the plan assumed or decided, printed with it

    def __add__(self, other: "Plan") -> "Plan":
        return Plan(self.calls + other.calls, self.notes + other.notes)

    def __bool__(self) -> bool:
        return bool(self.calls)

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]


def _shown(value: Any, steps: Mapping[str, int]) -> Any:
    if isinstance(value, Ref):
        return f"<{value.field} of step {steps.get(value.step, '?')}>"
    if isinstance(value, Mapping):
        return {k: _shown(v, steps) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(v, steps) for v in value]
    return value


def render(plan: Plan, title: str) -> str:
    """The plan as the dry run prints it: every call with its parameters, in order."""
    steps = {call.key: n for n, call in enumerate(plan.calls, 1) if call.key}
    lines = [title]
    lines += [f"  note: {note}" for note in plan.notes]
    if not plan.calls:
        lines.append("  nothing to do: the cloud already matches these settings")
    for n, call in enumerate(plan.calls, 1):
        lines.append(f"  {n}. {call.service}.{call.operation}  # {call.why}")
        body = json.dumps(_shown(dict(call.params), steps), indent=2, sort_keys=False, default=str)
        lines += ["       " + line for line in body.splitlines()]
        if call.wait:
            lines.append(f"     then wait: {call.wait.service} {call.wait.waiter} (up to {call.wait.timeout_s:.0f} s)")
    return "\n".join(lines)


class PlanClients:
    """The SDK clients, plus pseudo-clients for the steps that are not an SDK call (a push,
    packaging the weights): ``extra`` maps their service name to an object with the method."""

    def __init__(self, clients: Callable[[str], Any], extra: Mapping[str, Any]) -> None:
        self.clients, self.extra = clients, extra

    def __call__(self, service: str) -> Any:
        return self.extra[service] if service in self.extra else self.clients(service)


def _resolved(value: Any, answers: Mapping[str, Mapping[str, Any]]) -> Any:
    if isinstance(value, Ref):
        return answers[value.step][value.field]
    if isinstance(value, Mapping):
        return {k: _resolved(v, answers) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolved(v, answers) for v in value]
    return value


Poll = Callable[[Any, Mapping[str, Any], float, float], None]  # (client, params, timeout_s, delay_s)


@dataclass
class Applied:
    """What :func:`apply` did: the answers by step key, and how many calls completed."""

    answers: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    done: list[Call] = field(default_factory=list)


def apply(plan: Plan, client: Callable[[str], Any], *, poll_s: float = 15, polls: Mapping[str, Poll] | None = None,
          progress: Any = None, applied: Applied | None = None) -> Applied:
    """Make the plan's calls in order. ``client(service)`` gives an SDK client; ``polls`` holds the
    wait functions the SDK lacks. A failing call raises DeployError naming the step; ``applied``
    (pass one in to keep it on failure) records what was done before it."""
    applied = applied if applied is not None else Applied()
    task = progress.add_task("applying", total=len(plan.calls)) if progress is not None else None
    for n, call in enumerate(plan.calls, 1):
        if progress is not None:
            progress.update(task, description=f"{n}/{len(plan.calls)} {call.why}")
        sdk = client(call.service)
        try:
            answer = getattr(sdk, call.operation)(**_resolved(dict(call.params), applied.answers))
            if call.wait and call.wait.waiter == OPERATION:  # a long-running operation (google-api-core)
                answer = answer.result(timeout=call.wait.timeout_s)
            elif call.wait:
                _wait(call.wait, client, poll_s, polls or {}, applied.answers)
        except DeployError:
            raise
        except Exception as exc:  # botocore ClientError, WaiterError, google-api-core errors
            raise DeployError(f"step {n} ({call.service}.{call.operation}: {call.why}) failed: {_reason(exc)}") from exc
        if call.key:
            applied.answers[call.key] = answer
        applied.done.append(call)
        if progress is not None:
            progress.advance(task)
    return applied


def _wait(wait: Wait, client: Callable[[str], Any], poll_s: float, polls: Mapping[str, Poll],
          answers: Mapping[str, Mapping[str, Any]]) -> None:
    params = _resolved(dict(wait.params), answers)
    if wait.waiter in polls:
        polls[wait.waiter](client(wait.service), params, wait.timeout_s, poll_s)
        return
    delay = max(1, round(poll_s))
    client(wait.service).get_waiter(wait.waiter).wait(
        **params, WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(wait.timeout_s // delay))})


def poll_until(describe: Callable[[], Mapping[str, Any]], done: Callable[[Mapping[str, Any]], bool],
               failed: Callable[[Mapping[str, Any]], str | None], timeout_s: float, delay_s: float, what: str) -> Mapping[str, Any]:
    """Describe until ``done`` (returns the answer) or ``failed`` gives a reason (DeployError), at
    most ``timeout_s``; for the resources whose SDK has no waiter."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = describe()
        if done(answer):
            return answer
        reason = failed(answer)
        if reason:
            raise DeployError(f"{what} failed: {reason}")
        if time.monotonic() >= deadline:
            raise DeployError(f"{what} did not finish within {timeout_s:.0f} s; see its state with segany status")
        time.sleep(delay_s)


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
    last = getattr(exc, "last_response", None)  # botocore WaiterError
    if isinstance(last, Mapping):
        reason = last.get("FailureReason") or last.get("Error", {}).get("Message")
        if reason:
            return f"{exc}: {reason}"
    return str(exc)
