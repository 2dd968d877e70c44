"""A target's load and probe in a child process with a deadline.

A user's model file runs code: TorchScript's ``forward`` (and ``__setstate__`` at load) can loop
forever inside C++, where no Python signal reaches it, or crash the interpreter; an ONNX graph
can ask for more memory than the machine has. :func:`in_child` runs such work in a forked child
(the parent's modules already loaded, so it starts in milliseconds): one torch thread, stdout
and stderr silenced, SIGINT ignored (the parent handles Ctrl-C), the address space capped at
its size plus :func:`~optin.privacy.target_probe.memory_budget`, and an alarm that ends it
should the parent die. The parent waits at most :data:`PROBE_TIMEOUT_SECONDS` (20 s), in slices
that Ctrl-C interrupts; on the deadline, Ctrl-C or any failure the child is killed and reaped.

What comes back is one line: the child's own refusal (an :class:`~optin.errors.OptinError`, as
a :class:`~optin.privacy.target_probe.TargetModelError`), or ``<file>: ... took over 20 s``,
or ``<file>: the model crashed the probe (signal SIGSEGV)``. A bug in optin's own code keeps its
traceback (a ``RuntimeError`` holding the child's). Where ``os.fork`` does not exist (Windows)
the work runs in this process, without the deadline.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable

import torch

from optin.errors import OptinError
from optin.privacy.target_probe import PROBE_SECONDS, TargetModelError, memory_cap, one_line

PROBE_TIMEOUT_SECONDS = 20.0
_SLICE = 0.1  # seconds between looks at the child (what Ctrl-C waits at most)


def in_child(work: Callable[[], None], label: str,
             timeout: float | None = None) -> None:
    """Run ``work`` in a forked child; raise what it raised, as one line, in this process.

    Raises:
        TargetModelError: the child's refusal, its deadline, or its crash, naming ``label``.
    """
    timeout = PROBE_TIMEOUT_SECONDS if timeout is None else timeout
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        work()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(work, write_end, timeout)
    os.close(write_end)
    try:
        answer = _wait(pid, read_end, timeout, label)
    finally:
        os.close(read_end)
        _end(pid)
    if "bug" in answer:
        raise RuntimeError(f"the probe of {label} failed in optin's code:\n{answer['bug']}")
    if "error" in answer:
        raise TargetModelError(answer["error"])


def _child(work: Callable[[], None], out: int, timeout: float) -> None:
    """The child's side: run ``work`` under its limits, write the outcome, exit."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(timeout) + 5)  # an orphan ends by itself
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        torch.set_num_threads(1)
        try:
            with memory_cap():
                work()
            answer: dict[str, str] = {}
        except OptinError as err:
            answer = {"error": one_line(err) if "\n" in str(err) else str(err)}
        except MemoryError:
            answer = {"error": "memory"}
        except BaseException:
            answer = {"bug": traceback.format_exc()}
        data = json.dumps(answer).encode()
        while data:
            data = data[os.write(out, data):]
    finally:
        os._exit(0)


def _wait(pid: int, pipe: int, timeout: float, label: str) -> dict[str, str]:
    """The child's answer, read until it closes the pipe; a refusal on the deadline or when it
    dies without answering."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TargetModelError(
                f"{label}: loading the model and trying it on a {PROBE_SECONDS:g} s input took "
                f"over {timeout:g} s (a forward that never returns?); a target must answer in "
                "time")
        ready, _, _ = select.select([pipe], [], [], min(left, _SLICE))
        if not ready:
            continue
        block = os.read(pipe, 1 << 16)
        if not block:
            break
        chunks.append(block)
    data = b"".join(chunks)
    if not data:
        _, status = os.waitpid(pid, 0)
        cause = (f"signal {signal.Signals(os.WTERMSIG(status)).name}"
                 if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}")
        raise TargetModelError(f"{label}: the model crashed the probe ({cause}); the file "
                               "cannot serve as a target")
    answer = json.loads(data)
    if answer.get("error") == "memory":
        answer["error"] = (f"{label}: the model ran out of memory on a {PROBE_SECONDS:g} s "
                           "input, over the probe's memory budget")
    return answer


def _end(pid: int) -> None:
    """Kill the child if it is still there, and reap it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass
