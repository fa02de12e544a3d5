"""Restarts: `jido-tasks up` and `jido-tasks worker --restart` start a worker again when its
main process dies (SIGKILL), with backoff, never for a configuration error, and SIGINT still
stops everything (also during a backoff wait) with no process left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from jido_tasks import Client
from jido_tasks.cli.supervise import Backoff, Supervisor, describe_exit
from jido_tasks.ops.checks import EX_CONFIG
from jido_tasks.settings import Settings
from tests.conftest import ROOT, RedisServer, free_port, make_settings, wait_for, worker_env
from tests.test_up import _alive, _descendants

EXIT_1 = [sys.executable, "-c", "import sys; sys.exit(1)"]


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_a_long_run() -> None:
    backoff = Backoff(first=1.0, cap=30.0, reset_after=60.0)
    delays: list[float] = []
    previous: float | None = None
    for _ in range(7):
        previous = backoff.next(previous, uptime=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next(30.0, uptime=59.9) == 30
    assert backoff.next(30.0, uptime=60.0) == 1
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


@contextmanager
def watching(supervisor: Supervisor) -> Iterator[list[int]]:
    """Run `supervisor.watch()` in a thread; yields a list that receives its return code."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.watch()), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        supervisor.stop()
        thread.join(5)
        assert not thread.is_alive()


def test_a_child_failing_at_start_is_restarted_with_capped_backoff() -> None:
    """A child that exits at once, every time, is started again after 0.1, 0.2, 0.4, 0.4 s...:
    each restart logged with its exit code and the next delay, and no tight loop."""
    lines: list[str] = []
    supervisor = Supervisor(out=lines.append, backoff=Backoff(0.1, 0.4, 60.0))
    began = time.monotonic()
    child = supervisor.spawn("fails", EXIT_1, dict(os.environ))
    with watching(supervisor) as result:
        wait_for(lambda: child.restarts >= 5, 20, message="five restarts")
    elapsed = time.monotonic() - began
    assert result == [0]  # stopped, not given up
    exits = [line for line in lines if line.startswith("fails exited with exit code 1 after")]
    delays = [line.rsplit("starting it again in ", 1)[1] for line in exits]
    assert delays[:5] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s", "0.4 s"]
    assert "fails: starting it again (restart 1)" in lines
    assert elapsed >= 0.1 + 0.2 + 0.4 * 2  # the waits were kept: four of them before restart 5
    assert child.proc is not None and child.proc.poll() is not None


@pytest.mark.parametrize("code", [2, EX_CONFIG])
def test_a_configuration_error_is_not_restarted(code: int) -> None:
    lines: list[str] = []
    supervisor = Supervisor(out=lines.append, backoff=Backoff(0.1, 0.4, 60.0))
    supervisor.spawn("worker", [sys.executable, "-c", f"import sys; sys.exit({code})"],
                     dict(os.environ))
    sleeper = supervisor.spawn("other", [sys.executable, "-c", "import time; time.sleep(60)"],
                               dict(os.environ))
    with watching(supervisor) as result:
        wait_for(lambda: result, 20, message="the supervisor giving up")
    assert result == [code]
    assert not [line for line in lines if "starting it again" in line]
    assert [line for line in lines if "which a restart cannot fix; stopping everything" in line]
    assert sleeper.proc is not None and sleeper.proc.returncode == -signal.SIGTERM


SUPERVISE_SCRIPT = textwrap.dedent("""
    import sys
    from jido_tasks.cli.supervise import Backoff, Supervisor, run_supervised
    supervisor = Supervisor(out=lambda line: print(line, flush=True), backoff=Backoff(30.0))
    sys.exit(run_supervised(supervisor, lambda: supervisor.spawn("fails", {argv!r}, {{}})))
""")


def test_sigint_during_a_backoff_wait_stops_at_once(tmp_path: Path) -> None:
    """SIGINT while a child waits 30 s to be started again: the supervisor exits 0 at once."""
    script = SUPERVISE_SCRIPT.format(argv=EXIT_1)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("fails exited with exit code 1 after"), line
    assert line.rstrip().endswith("starting it again in 30 s")
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert time.monotonic() - began < 2


# -- a real worker killed by pid -------------------------------------------------------------
def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def _worker_main(parent: int) -> int | None:
    """The pid of the Celery worker's main process among `parent`'s children, if any."""
    res = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    for pid in map(int, res.stdout.split()):
        argv = _argv(pid)
        if "celery" in argv and "worker" in argv and _alive(pid):
            return pid
    return None


class Running:
    """A `jido-tasks ...` process of the test's own, its output collected."""

    def __init__(self, args: list[str], settings: Settings, cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "jido_tasks.cli", *args], cwd=cwd,
                                     env=worker_env(settings), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        stream = self.proc.stdout
        assert stream is not None
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")),
                         daemon=True).start()

    def text(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        """SIGINT, then its exit code (SIGKILL to its group if it hangs)."""
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(40)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def kill_worker_and_see_it_back(running: Running, settings: Settings) -> None:
    """SIGKILL the worker's main process (by pid, found in `running`'s process tree); a new
    one starts (a new pid), what the dead one left is gone, and it applies a new action."""
    with Client(settings) as client:
        wait_for(lambda: client.celery.control.ping(timeout=0.5), 90, 0.3, "the worker")
        old = wait_for(lambda: _worker_main(running.proc.pid), 10, message="the worker's pid")
        pool = _descendants(old)
        assert pool  # -c 1: one pool process
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: "worker exited with signal SIGKILL after" in running.text(), 10, 0.1,
                 "the exit logged")
        assert "starting it again in 1 s" in running.text()
        wait_for(lambda: _worker_main(running.proc.pid) not in (None, old), 30, 0.1,
                 "a new worker")
        new = _worker_main(running.proc.pid)
        assert new is not None and new != old
        wait_for(lambda: not [p for p in pool | {old} if _alive(p)], 10,
                 message="the dead worker's pool gone")
        sid = client.create_session().id
        handle = client.send(sid, "context.add_message", {"role": "user", "content": "back"})
        handle.get(90)
        messages = client.get_state(sid)["conversation"]
        assert [m["content"] for m in messages] == ["back"]
        assert _worker_main(running.proc.pid) == new


@pytest.mark.parametrize("command", ["up", "worker --restart"])
def test_a_worker_killed_by_sigkill_is_started_again(redis_server: RedisServer, tmp_path: Path,
                                                     command: str) -> None:
    """Under `up` and under `worker --restart`: a SIGKILLed worker main process comes back and
    applies an action; SIGINT then stops everything."""
    settings = make_settings(redis_server.url)
    args = (["up", "--port", str(free_port()), "--flower-port", str(free_port()), "-c", "1"]
            if command == "up" else ["worker", "--restart", "-c", "1"])
    running = Running(args, settings, tmp_path)
    try:
        kill_worker_and_see_it_back(running, settings)
        children = _descendants(running.proc.pid)
    finally:
        code = running.interrupt()
    assert code == 0, running.text()[-3000:]
    wait_for(lambda: not [p for p in children if _alive(p)], 5, message="no child left")
    if command == "up":
        assert "all stopped" in running.text()


def test_worker_restart_gives_up_on_a_worker_its_start_checks_stop(own_redis: RedisServer,
                                                                   tmp_path: Path) -> None:
    """`eviction_fatal` with an evicting Redis: the worker exits EX_CONFIG (78) at start, and
    `worker --restart` exits with it instead of starting it again."""
    r = redis.Redis(port=own_redis.port)
    r.config_set("maxmemory", "100mb")
    r.config_set("maxmemory-policy", "allkeys-lru")
    r.close()
    running = Running(["worker", "--restart", "-c", "1"],
                      make_settings(own_redis.url, eviction_fatal=True), tmp_path)
    try:
        code = running.proc.wait(90)
    finally:
        if running.proc.poll() is None:
            running.interrupt()
    wait_for(lambda: "stopping everything" in running.text(), 5, message="the last line")
    assert code == EX_CONFIG, running.text()[-3000:]
    assert "error: invalid setting JIDO_TASKS_EVICTION_FATAL" in running.text()
    assert "worker exited with exit code 78 after" in running.text()
    assert "starting it again" not in running.text()

