"""Child processes started again when they exit on their own (`jido-tasks up`,
`jido-tasks worker --restart`), with exponential backoff.

The rule: a child that exits while its supervisor is not stopping (any exit code, or a
signal) is started again after a delay of 1 s, doubled at each exit up to 30 s, and back to
1 s once a run lasted 60 s; so a child that keeps failing at start is retried every 30 s,
never in a tight loop. Two exit codes mean a configuration error no restart can fix, and
stop the supervisor (and its other children) instead: 2, a usage or settings error (the
CLI's, click's or Celery's), and 78 (`EX_CONFIG`), a worker that stops itself at start
because Redis refuses it (credentials, `eviction_fatal`; see `checks.stop_worker`).

Each child runs in a process group of its own, so stopping it (SIGTERM, SIGKILL after a grace
period) also stops what it forked, and what a dead child leaves behind (the pool of a worker
whose main process was killed) is killed before it is started again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import IO

from jido_tasks.ops.checks import EX_CONFIG

EX_USAGE = 2  # click's usage errors, and the CLI's `error: ...` for a bad setting
NO_RESTART = {EX_USAGE: "a usage or settings error", EX_CONFIG: "a configuration error"}
STOP_GRACE = 20.0  # seconds a child gets to stop after SIGTERM before SIGKILL
POLL = 0.2  # seconds between checks of the children (and of the stop flag)


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: `first`, doubled up to `cap`; `first` again after a run of
    `reset_after` seconds or more."""

    first: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0

    def next(self, previous: float | None, uptime: float) -> float:
        """The delay before the next start, given the previous delay and the last run's length."""
        if previous is None or uptime >= self.reset_after:
            return self.first
        return min(previous * 2, self.cap)


def describe_exit(code: int) -> str:
    """`exit code 1` or `signal SIGKILL` (Popen's negative return code)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


@dataclass
class Child:
    """One supervised process; `prefixed`: its output is streamed with its name in front
    (otherwise it writes to the supervisor's own stdout and stderr)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    prefixed: bool = True
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    started: float = 0.0
    delay: float | None = None  # the last backoff delay (None: no restart yet)
    restart_at: float | None = None  # when it is due to start again
    restarts: int = 0


@dataclass
class Supervisor:
    """Starts children, starts again those that exit, stops them all."""

    out: Callable[[str], None] = print
    backoff: Backoff = field(default_factory=Backoff)
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # output lines
    _turn: threading.Lock = field(default_factory=threading.Lock)  # watch's checks vs stop

    def spawn(self, name: str, argv: list[str], env: dict[str, str], *,
              prefixed: bool = True) -> Child:
        """Start a new child and supervise it."""
        child = Child(name, argv, env, prefixed)
        self._start(child)
        self.children.append(child)
        return child

    def _start(self, child: Child) -> None:
        pipe = subprocess.PIPE if child.prefixed else None
        child.proc = subprocess.Popen(child.argv, env=child.env, stdin=subprocess.DEVNULL,
                                      stdout=pipe, stderr=subprocess.STDOUT if pipe else None,
                                      start_new_session=True)
        child.started = time.monotonic()
        child.restart_at = None
        if child.proc.stdout is not None:
            child.pump = threading.Thread(target=self._pump,
                                          args=(child.name, child.proc.stdout), daemon=True)
            child.pump.start()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            with self._lock:
                self.out(f"{name:<7}| {line}")

    def exited(self) -> Child | None:
        """A child whose process has exited, if any."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return child
        return None

    def watch(self) -> int:
        """Start again each child that exits, until stopped (0) or a child exits with a code
        of `NO_RESTART` (that code)."""
        while not self.stopping.wait(POLL):
            with self._turn:  # stop() in another thread never misses a child started here
                for child in self.children:
                    if self.stopping.is_set():
                        return 0
                    code = self._check(child, time.monotonic())
                    if code is not None:
                        return code
        return 0

    def _check(self, child: Child, now: float) -> int | None:
        """Notice an exit (schedule the restart, or give up: the exit code) or restart when due."""
        assert child.proc is not None
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self._say(f"{child.name}: starting it again (restart {child.restarts})")
                self._start(child)
            return None
        code = child.proc.poll()
        if code is None:
            return None
        _signal_group(child, signal.SIGKILL)  # what it left behind (a killed worker's pool)
        uptime = now - child.started
        if code in NO_RESTART:
            self._say(f"{child.name} exited with {describe_exit(code)} after {uptime:.1f} s: "
                      f"{NO_RESTART[code]}, which a restart cannot fix; stopping everything")
            return code
        child.delay = self.backoff.next(child.delay, uptime)
        child.restart_at = now + child.delay
        self._say(f"{child.name} exited with {describe_exit(code)} after {uptime:.1f} s; "
                  f"starting it again in {child.delay:g} s")
        return None

    def _say(self, line: str) -> None:
        with self._lock:
            self.out(line)

    def stop(self, last: Collection[str] = ()) -> None:
        """SIGTERM every child's process group (those named in `last` after the others have
        gone), SIGKILL what is left after the grace period, and wait for all of them."""
        self.stopping.set()
        with self._turn:
            self._stop_all(last)

    def _stop_all(self, last: Collection[str]) -> None:
        for group in ([c for c in self.children if c.name not in last],
                      [c for c in self.children if c.name in last]):
            for child in group:
                if child.proc is not None and child.proc.poll() is None:
                    _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for child in group:
                _wait_or_kill(child, deadline)


def _wait_or_kill(child: Child, deadline: float) -> None:
    assert child.proc is not None
    try:
        child.proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _signal_group(child, signal.SIGKILL)
        child.proc.wait()
    _signal_group(child, signal.SIGKILL)  # anything it forked that outlived it (same group)
    if child.pump is not None:
        child.pump.join(2)


def _signal_group(child: Child, sig: int) -> None:
    if child.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, sig)


def run_supervised(supervisor: Supervisor, start: Callable[[], object],
                   last: Collection[str] = ()) -> int:
    """Run `start`, then watch until SIGINT/SIGTERM (0) or a child that cannot be restarted
    (its exit code); stop every child in any case."""
    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        start()
        return supervisor.watch()
    finally:
        supervisor.stop(last)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
