"""A Cloud Run job execution in the emulator: the job's tasks run here as the image runs them.

The job is the Admin API v2 Job that ``segany deploy gcp --job --dry-run`` prints (its
``template``: ``task_count``, ``parallelism``, and the task template's container ``args``,
``env``, ``resources.limits.memory``, ``timeout``, ``max_retries``), or one built from flags by
``segany emulate cloudrun-job``. As Cloud Run runs an execution
(cloud.google.com/run/docs/create-jobs, .../configuring/max-retries, .../configuring/task-timeout,
.../container-contract#jobs-env-vars):

- each task is the container's command (``segany ARGS``: ``segany batch INPUT OUTPUT ...``) with
  CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION, CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_ATTEMPT and
  CLOUD_RUN_TASK_COUNT set, at most ``parallelism`` at a time (0: all at once);
- an attempt that exits non-zero, runs past the task timeout (killed) or past the memory limit
  (a cgroup, root on Linux; skipped with a note elsewhere) is retried up to ``max_retries``
  times, and the task fails after the last;
- the answer is shaped as the Execution resource (``task_count``, ``succeeded_count``,
  ``failed_count``, ``retried_count``, the ``Completed`` condition), with each attempt's exit
  code, seconds, reason and log.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deploy.limits import (CLOUD_RUN_JOB_DEFAULT_RETRIES, CLOUD_RUN_JOB_DEFAULT_TIMEOUT_S, CLOUD_RUN_JOB_RETRIES,
                           CLOUD_RUN_JOB_TASK_TIMEOUT_S, CLOUD_RUN_JOB_TASKS)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = CLOUD_RUN_JOB_DEFAULT_TIMEOUT_S
DEFAULT_RETRIES = CLOUD_RUN_JOB_DEFAULT_RETRIES
COMMAND = [sys.executable, "-m", "deploy.cli"]  # the image's `segany`, run outside it
ROOT = Path(__file__).resolve().parents[2]


def _seconds(value: str | int | float | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", value.strip())
    if not match:
        raise ValueError(f"timeout {value!r}: a duration in seconds such as '600s'")
    return float(match.group(1))


def memory_mib(value: str | None) -> int | None:
    """A Kubernetes quantity (``6Gi``, ``512Mi``, ``2G``) in MiB."""
    if not value:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", value.strip())
    if not match:
        raise ValueError(f"memory {value!r}: a quantity such as 512Mi or 6Gi")
    number, unit = float(match.group(1)), match.group(2) or ""
    factor = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}[unit]
    return int(number * factor / 2**20)


def check_job(job: dict[str, Any]) -> list[str]:
    """What the Admin API (or this emulator) refuses in ``job``; empty when it runs."""
    problems = []
    template = job.get("template") or {}
    task = template.get("template") or {}
    tasks = template.get("task_count", 1)
    if not CLOUD_RUN_JOB_TASKS[0] <= tasks <= CLOUD_RUN_JOB_TASKS[1]:
        problems.append(f"task_count {tasks}: {CLOUD_RUN_JOB_TASKS[0]}-{CLOUD_RUN_JOB_TASKS[1]} (cloud.google.com/run/quotas)")
    if template.get("parallelism", 0) < 0:
        problems.append("parallelism: 0 (as many as possible) or more")
    retries = task.get("max_retries", DEFAULT_RETRIES)
    if not CLOUD_RUN_JOB_RETRIES[0] <= retries <= CLOUD_RUN_JOB_RETRIES[1]:
        problems.append(f"max_retries {retries}: {CLOUD_RUN_JOB_RETRIES[0]}-{CLOUD_RUN_JOB_RETRIES[1]} "
                        "(cloud.google.com/run/docs/configuring/max-retries)")
    try:
        timeout = _seconds(task.get("timeout"), DEFAULT_TIMEOUT_S)
        if not 0 < timeout <= CLOUD_RUN_JOB_TASK_TIMEOUT_S:
            problems.append(f"timeout {timeout:g} s: up to {CLOUD_RUN_JOB_TASK_TIMEOUT_S} s (168 hours; "
                            "cloud.google.com/run/docs/configuring/task-timeout)")
    except ValueError as exc:
        problems.append(str(exc))
    containers = task.get("containers") or []
    if len(containers) != 1:
        problems.append("one container per task (the emulator runs the image's own)")
    elif (containers[0].get("command") or ["segany"]) != ["segany"]:
        problems.append(f"command {containers[0]['command']}: the image's is segany (args choose the subcommand)")
    else:
        try:
            memory_mib((containers[0].get("resources") or {}).get("limits", {}).get("memory"))
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class _Attempt:
    """One attempt of one task: the process, in a memory cgroup when asked."""

    def __init__(self, index: int, attempt: int, command: list[str], env: dict[str, str], log: Path,
                 memory_mb: int | None) -> None:
        self.index, self.attempt, self.log = index, attempt, log
        self.cgroup, self.memory_note = None, ""
        if memory_mb is not None:
            from bench.memcap import MemoryCgroup, cgroup_name

            try:
                self.cgroup = MemoryCgroup(cgroup_name(f"job-{os.getpid()}-{index}-{attempt}"), memory_mb)
                command = self.cgroup.wrap(command)
            except OSError as exc:
                self.memory_note = f"memory limit NOT enforced: {exc} (needs root and a cgroup memory controller)"
        self.command, self.env = command, env

    def run(self, timeout_s: float) -> dict[str, Any]:
        started = time.perf_counter()
        with self.log.open("wb") as out:
            process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                code, timed_out = process.wait(), True
        seconds = time.perf_counter() - started
        oom = bool(self.cgroup and self.cgroup.report()["oom_kills"])
        if self.cgroup is not None:
            self.cgroup.close()
        if timed_out:
            reason = f"The configured timeout of {timeout_s:g} s was reached; the task attempt was stopped."
        elif oom:
            reason = f"Memory limit of {self.cgroup.limit_mb} MiB exceeded; the task attempt was stopped."
        elif code != 0:
            reason = f"Task attempt exited with exit code {code}."
        else:
            reason = ""
        return {"attempt": self.attempt, "exit_code": code, "seconds": seconds, "reason": reason, "log": str(self.log),
                **({"memory_note": self.memory_note} if self.memory_note else {})}


def run_execution(job: dict[str, Any], env: dict[str, str], log_dir: Path, *, name: str = "segany-job",
                  execution: str | None = None) -> dict[str, Any]:
    """Run one execution of ``job`` (an Admin API v2 Job) and answer it shaped as the Execution."""
    problems = check_job(job)
    if problems:
        raise ValueError("; ".join(problems))
    template = job["template"]
    task = template["template"]
    container = task["containers"][0]
    tasks = template.get("task_count", 1)
    parallelism = template.get("parallelism") or tasks
    retries = task.get("max_retries", DEFAULT_RETRIES)
    timeout_s = _seconds(task.get("timeout"), DEFAULT_TIMEOUT_S)
    memory = memory_mib((container.get("resources") or {}).get("limits", {}).get("memory"))
    execution = execution or f"{name}-{dt.datetime.now():%Y%m%d%H%M%S}"
    base_env = {**env, **{e["name"]: e.get("value", "") for e in container.get("env") or []},
                "CLOUD_RUN_JOB": name, "CLOUD_RUN_EXECUTION": execution, "CLOUD_RUN_TASK_COUNT": str(tasks)}
    command = [*COMMAND, *(container.get("args") or [])]
    log_dir.mkdir(parents=True, exist_ok=True)
    retried = 0
    lock = threading.Lock()

    def one(index: int) -> dict[str, Any]:
        nonlocal retried
        attempts = []
        for attempt in range(retries + 1):
            run_env = {**base_env, "CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_ATTEMPT": str(attempt)}
            result = _Attempt(index, attempt, command, run_env, log_dir / f"task-{index}-attempt-{attempt}.log",
                              memory).run(timeout_s)
            attempts.append(result)
            if result["exit_code"] == 0 and not result["reason"]:
                break
            if attempt < retries:
                with lock:
                    retried += 1
        ok = attempts[-1]["exit_code"] == 0 and not attempts[-1]["reason"]
        return {"index": index, "succeeded": ok, "attempts": attempts}

    started, clock = _now(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, tasks))) as pool:
        results = list(pool.map(one, range(tasks)))
    failed = [r for r in results if not r["succeeded"]]
    message = (f"Execution {execution} has successfully completed." if not failed else
               f"Task {execution}-task{failed[0]['index']} failed: {failed[0]['attempts'][-1]['reason']} "
               f"({len(failed)} of {tasks} task(s) failed after {retries + 1} attempt(s) each)")
    return {"name": execution, "job": name, "task_count": tasks, "parallelism": parallelism,
            "succeeded_count": tasks - len(failed), "failed_count": len(failed), "retried_count": retried,
            "cancelled_count": 0, "start_time": started, "completion_time": _now(),
            "conditions": [{"type": "Completed", "state": "CONDITION_FAILED" if failed else "CONDITION_SUCCEEDED",
                            "message": message}],
            "tasks": results, "billed_task_s": sum(a["seconds"] for r in results for a in r["attempts"]),
            "wall_s": time.perf_counter() - clock, "memory_mb": memory}
