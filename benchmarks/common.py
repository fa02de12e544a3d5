"""Shared benchmark plumbing: private redis-servers, Celery worker subprocesses (jido-tasks'
and stock Celery's), Redis and process CPU meters, interleaved rounds and goals.

The baseline of a comparison is stock Celery (`benchmarks.stock_app`: its own app on kombu's
Redis transport, on a redis-server of its own) unless a figure says "our worker" (a bare task
on the jido-tasks worker). Each side has its own redis-server, so `INFO commandstats` and
`used_memory` deltas hold that side's work only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import redis
from celery import Celery
from celery.result import ResultSet

from benchmarks import stock_app
from jido_tasks import Client, Settings

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
Figures = dict[str, float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A private redis-server on a free port (nothing persisted)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jido-bench-")
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def settings_for(url: str, **overrides: Any) -> Settings:
    ns = f"b{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {"redis_url": url, "namespace": ns, "queue": ns,
                              "action_modules": ["benchmarks.bench_actions"]}
    values.update(overrides)
    return Settings(**values)


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
    env.update(settings.to_env())
    env["JIDO_TASKS_CONFIG"] = "/nonexistent"
    env["PYTHONPATH"] = str(ROOT)
    return env


class _CeleryWorker:
    """A `celery -A <app> worker` subprocess (prefork), in a process group of its own."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def _start(self, app: str, env: dict[str, str], concurrency: int, tag: str,
               ping: Callable[[], Any]) -> None:
        logfile = Path(tempfile.gettempdir()) / f"jido-bench-{tag}.log"
        self.log = open(logfile, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker",
             "-P", "prefork", "-c", str(concurrency), "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "WARNING", "-E",
             "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while not ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{app} worker did not start (log: {logfile})")

    def pids(self) -> list[int]:
        """The main process and its pool processes."""
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Worker(_CeleryWorker):
    """One jido-tasks Celery worker process (prefork) for the given settings."""

    def __init__(self, settings: Settings, concurrency: int = 2) -> None:
        client = Client(settings)
        try:
            self._start("jido_tasks.celery_app", env_for(settings), concurrency,
                        settings.namespace, lambda: client.celery.control.ping(timeout=0.5))
        finally:
            client.close()


class StockWorker(_CeleryWorker):
    """A stock Celery worker (`benchmarks.stock_app`, kombu's transport) on `url`; checks that
    it runs without jido_tasks and on kombu's own transport."""

    def __init__(self, url: str, concurrency: int = 2) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
        env[stock_app.URL_ENV] = url
        env["PYTHONPATH"] = str(ROOT)
        self.concurrency = concurrency
        self.app = stock_app.make_app(url)
        self._start("benchmarks.stock_app", env, concurrency, f"stock-{uuid.uuid4().hex[:6]}",
                    lambda: self.app.control.ping(timeout=0.5))
        seen = self.app.send_task(stock_app.PROBE).get(timeout=30)
        if seen["jido_tasks"] or seen["transport"] != "kombu.transport.redis.Transport":
            self.stop()
            raise RuntimeError(f"the stock worker is not stock Celery: {seen}")
        self.transport = str(seen["transport"])

    def stop(self) -> None:
        super().stop()
        self.app.close()


def command_calls(r: redis.Redis) -> int:
    """Total commands Redis has executed since the last CONFIG RESETSTAT."""
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (a prefork worker: the main process and its pool)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(int(child) for child in found.split())]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes `pids` have used so far (Linux /proc); a process
    that is gone counts nothing."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# -- meters -------------------------------------------------------------------------------------
SCRIPT_COMMANDS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}
METER_COMMANDS = {"info"}
"""The meter's own readings, left out of the counts."""


@dataclass(frozen=True)
class Cost:
    """What a measured piece of work cost, per unit of work.

    `commands` and `redis_us` are sums over `INFO commandstats` deltas. Redis counts a
    command run by a Lua script or by EXEC as a command of its own, and its time is in the
    script's or EXEC's time as well as its own: `redis_us` counts that time twice, on both
    sides (stock Celery's MULTI/EXEC bookkeeping, jido-tasks' scripts). `redis_cpu_us` is the
    redis-server main thread's CPU (`INFO cpu`): nothing twice, network work included.
    `procs_ms` is the CPU of the side's worker processes and its redis-server (/proc)."""

    commands: float
    scripts: float
    redis_us: float
    redis_cpu_us: float
    procs_ms: float
    script_us: float = 0.0
    """Of `redis_us`, the scripts' time (EVAL/EVALSHA, the commands they call included)."""
    top: tuple[tuple[str, float, float], ...] = ()
    """The commands that took the most time: (name, calls, usec) per unit."""

    def figures(self, prefix: str) -> Figures:
        return {f"{prefix}_{name}": getattr(self, name) for name in
                ("commands", "scripts", "redis_us", "redis_cpu_us", "procs_ms")}


class Meter:
    """Redis commandstats and CPU, and process CPU, over a piece of work."""

    def __init__(self, r: redis.Redis, pids: list[int]) -> None:
        self.r = r
        self.pids = pids

    def _reading(self) -> tuple[dict[str, tuple[int, int]], float, float]:
        """(command -> (calls, usec), Redis main-thread CPU us, process CPU ms)."""
        commands = {key.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
                    for key, value in self.r.info("commandstats").items()}
        cpu = self.r.info("cpu")
        main = (float(cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"]))
                + float(cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"])))
        return commands, main * 1e6, cpu_seconds(self.pids) * 1e3

    def measure(self, work: Callable[[], T], units: int) -> tuple[T, Cost]:
        """(what `work` returns, its cost per unit)."""
        (was, cpu0, procs0) = self._reading()
        value = work()
        (now, cpu1, procs1) = self._reading()
        delta = {name: ((calls - was.get(name, (0, 0))[0]) / units,
                        (usec - was.get(name, (0, 0))[1]) / units)
                 for name, (calls, usec) in now.items()
                 if name.split("|")[0] not in METER_COMMANDS}
        top = sorted(((name, c, u) for name, (c, u) in delta.items() if c), key=lambda x: -x[2])
        return value, Cost(
            commands=sum(c for c, _ in delta.values()),
            scripts=sum(c for name, (c, _) in delta.items()
                        if name.split("|")[0] in SCRIPT_COMMANDS),
            redis_us=sum(u for _, u in delta.values()),
            script_us=sum(u for name, (_, u) in delta.items()
                          if name.split("|")[0] in SCRIPT_COMMANDS),
            redis_cpu_us=(cpu1 - cpu0) / units, procs_ms=(procs1 - procs0) / units,
            top=tuple(top[:8]))


# -- the two sides ------------------------------------------------------------------------------
@dataclass
class Stock:
    """Stock Celery: its redis-server, worker and client app (kombu's transport)."""

    server: Redis
    worker: StockWorker
    app: Celery
    r: redis.Redis
    meter: Meter

    def describe(self) -> str:
        """What the baseline runs, as its worker reported it."""
        return (f"baseline: stock Celery worker (`celery -A benchmarks.stock_app worker -c "
                f"{self.worker.concurrency}`), transport {self.worker.transport}, no jido_tasks "
                f"module loaded; its own redis-server")

    def close(self) -> None:
        """Stop the worker, then the redis-server."""
        try:
            self.worker.stop()
        finally:
            self.r.close()
            self.server.stop()


@dataclass
class Jido:
    """jido-tasks: its redis-server, settings, worker and client."""

    server: Redis
    settings: Settings
    worker: Worker
    client: Client
    r: redis.Redis
    meter: Meter

    def close(self) -> None:
        """Stop the worker and close the client (the redis-server is left running)."""
        try:
            self.worker.stop()
        finally:
            self.client.close()
            self.r.close()


def start_stock(concurrency: int = 2) -> Stock:
    """A stock Celery worker on a private redis-server of its own."""
    server = Redis()
    try:
        worker = StockWorker(server.url, concurrency)
    except BaseException:
        server.stop()
        raise
    r = redis.Redis.from_url(server.url)
    return Stock(server, worker, worker.app, r,
                 Meter(r, [*worker.pids(), server.proc.pid]))


def start_jido(server: Redis, concurrency: int = 2, **overrides: Any) -> Jido:
    """A jido-tasks worker and client in a fresh namespace on `server`; `overrides` go to
    the settings."""
    settings = settings_for(server.url, **overrides)
    worker = Worker(settings, concurrency)
    r = redis.Redis.from_url(server.url)
    return Jido(server, settings, worker, Client(settings), r,
                Meter(r, [*worker.pids(), server.proc.pid]))


@contextmanager
def stock_and_jido(concurrency: int = 2, **overrides: Any) -> Iterator[tuple[Stock, Jido]]:
    """A stock Celery worker and a jido-tasks worker (same concurrency), each on a private
    redis-server of its own; `overrides` go to the jido-tasks settings."""
    with ExitStack() as stack:
        stock = start_stock(concurrency)
        stack.callback(stock.close)
        server = Redis()
        stack.callback(server.stop)
        jido = start_jido(server, concurrency, **overrides)
        stack.callback(jido.close)
        yield stock, jido


def breakdown(label: str, cost: Cost) -> str:
    """The commands that took the most Redis time per unit (`INFO commandstats`)."""
    parts = ", ".join(f"{name} {calls:.2f}x {usec:.1f} us" for name, calls, usec in cost.top)
    return (f"  {label}: {cost.redis_us:.1f} us ({cost.script_us:.1f} in scripts), "
            f"{cost.commands:.1f} commands per unit: {parts}")


def refresh_pids(stock: Stock, jido: Jido) -> None:
    """Meter the worker processes as they are now (pool processes start with the worker, but
    call this after warming up in case one was replaced)."""
    stock.meter.pids = [*stock.worker.pids(), stock.server.proc.pid]
    jido.meter.pids = [*jido.worker.pids(), jido.server.proc.pid]


def wait_budget(n: int) -> float:
    """Seconds to wait for `n` units of work before calling it stuck (a broken worker)."""
    return 60 + n / 20


def stock_throughput(stock: Stock, n: int) -> tuple[float, Cost]:
    """`n` stock no-op tasks sent with `apply_async`, waited on together (results stored):
    (tasks/s, cost per task)."""
    task = stock.app.tasks[stock_app.NOOP]

    def work() -> float:
        t0 = time.perf_counter()
        ResultSet([task.apply_async() for _ in range(n)]).join_native(timeout=wait_budget(n))
        return n / (time.perf_counter() - t0)

    return stock.meter.measure(work, n)


def stock_latency(stock: Stock, n: int) -> list[float]:
    """Round trips of `apply_async().get()` of the stock no-op task, one after the other."""
    task = stock.app.tasks[stock_app.NOOP]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        task.apply_async().get(timeout=30)
        out.append(time.perf_counter() - t0)
    return out


# -- rounds and goals ---------------------------------------------------------------------------
@dataclass
class Round:
    """One round's figures for each side (stock measured first, then jido-tasks)."""

    stock: Figures
    jido: Figures


def interleaved(rounds: int, stock: Callable[[], Figures], jido: Callable[[], Figures],
                show: Callable[[int, Round], str]) -> list[Round]:
    """Round 1 stock, round 1 jido-tasks, round 2 stock, ...: machine noise hits both sides;
    each round's line (`show`) is printed as soon as the round is done."""
    out = []
    for i in range(1, rounds + 1):
        done = Round(stock(), jido())
        out.append(done)
        print(f"round {i} (load {os.getloadavg()[0]:.2f}): {show(i, done)}", flush=True)
    return out


WORST_ROUND = 0.8
"""No round may be worse than this fraction of its goal (>= goal: 80% of it; <= goal: the
goal / 0.8)."""


@dataclass(frozen=True)
class Goal:
    """A figure taken each round, its baseline and its goal (`op` "" for a figure with none)."""

    name: str
    baseline: str
    value: Callable[[Round], float]
    op: str = ""
    target: float = 0.0
    unit: str = "x"

    def verdict(self, values: list[float]) -> str:
        if not self.op:
            return "(no goal)"
        median = statistics.median(values)
        if self.op == ">=":
            bound, worst = self.target * WORST_ROUND, min(values)
            ok, round_ok = median >= self.target, worst >= bound
        else:
            bound, worst = self.target / WORST_ROUND, max(values)
            ok, round_ok = median <= self.target, worst <= bound
        text = (f"goal {self.op} {num(self.target)}{self.unit}, worst round {num(worst)}"
                f"{self.unit} (bound {self.op} {num(bound)}{self.unit})")
        if ok and round_ok:
            return f"{text}  ok"
        return f"{text}  MISSED ({'median' if not ok else 'worst round'})"


def num(x: float) -> str:
    """A figure with the digits that matter: 3.42, 48.1, 500, 1,234."""
    if abs(x) >= 1000 or (abs(x) >= 10 and x == int(x)):
        return f"{x:,.0f}"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}"


def report(goals: list[Goal], rounds: list[Round]) -> None:
    """Each goal: its median, per-round values, baseline and verdict."""
    for goal in goals:
        values = [goal.value(r) for r in rounds]
        each = " ".join(num(v) for v in values)
        base = f"vs {goal.baseline}" if goal.baseline else "absolute"
        print(f"  {goal.name:58} {num(statistics.median(values)):>7}{goal.unit:3} "
              f"[{base}] rounds: {each}; {goal.verdict(values)}")


def ratio(key: str, base: str | None = None) -> Callable[[Round], float]:
    """A round's jido-tasks figure `key` over its stock figure `base` (default the same key)."""
    return lambda r: r.jido[key] / r.stock[base or key]


QUICK_NOTE = ("--quick: small sizes, one round: a check that the benchmark runs, not a result "
              "(fixed costs weigh more at these sizes: stock throughput over 200 tasks is about "
              "half of that over 3,000 on this machine)")


def loadavg() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"
