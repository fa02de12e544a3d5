"""Test harness: a private redis-server and real Celery worker subprocesses.

No in-memory stand-in for Redis, no mocks, no eager Celery. The private redis-server lives for
the whole run; each test gets a key namespace (and, for the worker groups it starts, a Celery
queue) of its own, so no test sees another's keys or messages. A test that kills Redis uses
`own_redis`, a server of its own.

Broker matrix: a test marked `@pytest.mark.brokers` runs twice, its workers on the Redis broker
(the default) and on RabbitMQ (`amqp`, a vhost of this run's own on 127.0.0.1:5672, deleted at
the end), the registry staying on Redis. RabbitMQ missing fails the `amqp` variants: `.ci/run`
starts it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from jido_tasks import Client, Settings
from jido_tasks.worker import drain as runtime
from tests.cluster import RedisClusterServers

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long soak/chaos variants")
    parser.addoption("--fast", action="store_true",
                     help="the inner loop (`make test-fast`): no chaos, no broker matrix "
                          "(Redis broker only), no Redis Cluster, no slow fault tests")


BROKERS = ("redis", "amqp")
"""The brokers a `@pytest.mark.brokers` test runs on."""
RABBITMQ = ("127.0.0.1", 5672)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.brokers`: one variant per broker, through the `broker` fixture."""
    if metafunc.definition.get_closest_marker("brokers") and "broker" in metafunc.fixturenames:
        metafunc.parametrize("broker", BROKERS, indirect=True)


GUARANTEE_MODULES = {
    "test_session_work", "test_reliability", "test_faults", "test_hostile_input",
    "test_sweep", "test_reach", "test_reliable_fetch", "test_state_parts", "test_results",
    "test_dependencies", "test_persistence", "test_events",
}
"""The modules that test the guarantees (docs/guarantees.md): marked `guarantee`, the set
`make test-floor` runs on the lowest dependency versions the pins allow."""
FAST_SKIPS_MODULES = {"test_chaos", "test_cluster", "test_brokers", "test_restart", "test_up",
                      "test_web_browser", "test_compose", "test_dead_worker", "test_amqps"}
FAST_SKIPS_WORDS = ("sigkill", "killed", "dead", "restart", "survive", "out_of_memory",
                    "flower", "beat", "long_queue", "starve", "sigterm", "heartbeat", "poison",
                    "two_workers", "three_workers", "real_workload", "concurrent_waits",
                    "refused_credentials", "rediss", "json_logs", "pickle", "cli_snapshot",
                    "fleet", "acl_change", "outage", "cancelled_by_name", "loop_lag",
                    "asks_celery", "session_lifecycle", "save_is_between", "round_trip_with",
                    "terminate_with_drain", "running_action_is_not_expired", "lost_drain",
                    "every_mistake")
"""`--fast` leaves out tests whose name says they kill, restart or wait out something: they
are the slow ones, and `make test` runs them."""


def _fast_skip(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "id", "")
    name = item.name.partition("[")[0]
    return (item.module.__name__.rpartition(".")[2] in FAST_SKIPS_MODULES  # type: ignore[attr-defined]
            or "cluster" in params or "amqp" in params
            or any(word in name for word in FAST_SKIPS_WORDS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__.rpartition(".")[2] in GUARANTEE_MODULES:
            item.add_marker(pytest.mark.guarantee)
    if config.getoption("--fast"):
        kept = [item for item in items if not _fast_skip(item)]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak variant: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server subprocess on a free port; can be killed and restarted."""

    def __init__(self, tmp: Path, aof: bool = False, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.dir = tmp
        self.aof = aof
        """Append-only file on (fsync always): a restart keeps every acknowledged write."""
        self.args = args
        """More redis-server arguments (e.g. --maxmemory, --requirepass)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
             "--dir", str(self.dir), "--maxmemory-policy", "noeviction", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=self.password)
        wait_for(lambda: self._ping(client), 10, message=f"redis-server on {self.port}")
        client.close()

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.ResponseError):  # down, or loading its AOF
            return False

    @property
    def password(self) -> str | None:
        """The default user's password, if started with --requirepass."""
        args = list(self.args)
        return args[args.index("--requirepass") + 1] if "--requirepass" in args else None

    def shutdown(self) -> None:
        """SHUTDOWN, as an operator stops Redis (the AOF, if on, is kept)."""
        if self.proc is not None:
            # No retries: redis-py's default retries the closed connection with backoff,
            # which kept SHUTDOWN waiting about 3 s after Redis had gone.
            client = redis.Redis(port=self.port, password=self.password,
                                 retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown()
            self.proc.wait(30)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole test run."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One private three-master Redis Cluster for the whole run (started on first use)."""
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(params=["single"])
def redis_backend(request: pytest.FixtureRequest) -> str:
    """Where the session data lives: "single" (the private Redis) or "cluster" (the private
    Redis Cluster). A module runs its tests on both by overriding this fixture with
    `params=["single", "cluster"]`."""
    return str(request.param)


@pytest.fixture
def backend_settings(redis_backend: str, redis_server: RedisServer,
                     request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for the backend: on the cluster the Celery broker and result
    backend stay on the single Redis (Celery's Redis transport does not speak Cluster)."""
    if redis_backend == "single":
        return {}
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    return {"redis_url": cluster.url, "redis_cluster": True, "broker_url": redis_server.url,
            "result_backend": redis_server.url}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def rabbitmqctl(*args: str) -> None:
    """Run `rabbitmqctl ARGS` on the local node (through `sudo -n` unless root: Debian's
    rabbitmqctl runs for root or rabbitmq only); fail the test with its output if it fails."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    out = subprocess.run([*sudo, "rabbitmqctl", *args], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {out.stderr or out.stdout}")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test run's own (deleted at the end), as a broker URL. A
    RabbitMQ that does not answer fails the test: CI (`.ci/run`) starts one."""
    try:
        socket.create_connection(RABBITMQ, timeout=2).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ does not answer on {RABBITMQ[0]}:{RABBITMQ[1]} ({exc}): "
                    "start it (`rabbitmq-server -detached`; `.ci/run` does)")
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed: it makes the test run's vhost")
    vhost = f"jt-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> str:
    """The workers' broker: `redis` unless the test is the `amqp` variant of a
    `@pytest.mark.brokers` test."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture
def broker_url(broker: str, request: pytest.FixtureRequest) -> str | None:
    """The `broker_url` setting of the workers' settings (None: `redis_url`)."""
    return str(request.getfixturevalue("amqp_url")) if broker == "amqp" else None


def make_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": url,
        "namespace": f"t{uuid.uuid4().hex[:10]}",
        "lease_ttl": 2.0,
        "action_modules": ["tests.actions"],
    }
    values["queue"] = values["namespace"]
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(redis_server: RedisServer, backend_settings: dict[str, Any]) -> Settings:
    """Settings for a fresh namespace on the private Redis (or cluster: `redis_backend`)."""
    return make_settings(redis_server.url, **backend_settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = Client(settings)
    yield c
    c.close()


@pytest.fixture
def raw_redis(settings: Settings) -> Iterator[redis.Redis]:
    """A plain client of where the session data lives (a cluster client on the cluster)."""
    r: Any = (RedisCluster.from_url(settings.redis_dsn, decode_responses=True)
              if settings.redis_cluster else redis.Redis.from_url(settings.redis_dsn,
                                                                  decode_responses=True))
    yield r
    r.close()


def burst(client: Client, session_id: str) -> int:
    """Drain the session in this process until its mailbox is empty, like arq's burst worker:
    real Redis, real Lua, the real `runtime.drain`. For tests of pure action logic; order, fault
    and chaos tests use worker subprocesses. Returns the number of actions applied."""
    mailbox = client.layer.keys.session(session_id).mailbox
    applied = 0
    for _ in range(10_000):
        if not client.layer.redis.llen(mailbox):
            return applied
        report = runtime.drain(client.layer, session_id, worker="burst")
        if report.outcome == "busy":  # a lease of an earlier drain still lives
            time.sleep(report.retry_after or 0.05)
        applied += report.applied
    raise AssertionError(f"session {session_id} did not drain")


class BurstClient(Client):
    """A `Client` whose `call` drains the session in this process (see `burst`)."""

    def call(self, session_id: str, action: str, params: Any = None,
             timeout: float | None = 30.0) -> Any:
        handle = self.send(session_id, action, params)
        burst(self, session_id)
        return handle.get(timeout)


@pytest.fixture
def burst_client(settings: Settings) -> Iterator[BurstClient]:
    """A client whose calls are drained in the test process (no worker subprocess)."""
    c = BurstClient(settings)
    yield c
    c.close()


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIDO_TASKS_")}
    env.update(settings.to_env())
    env["JIDO_TASKS_CONFIG"] = "/nonexistent"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class WorkerGroup:
    """Celery worker subprocesses (prefork, one child each) sharing one settings/namespace."""

    def __init__(self, settings: Settings, logdir: Path) -> None:
        self.settings = settings
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client = Client(settings)

    def start(self, n: int = 1, concurrency: int = 1, wait: bool = True) -> None:
        first = len(self.procs)
        for i in range(first, first + n):
            log = open(self.logdir / f"worker{i}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "jido_tasks.celery_app", "worker",
                 "-P", "prefork", "-c", str(concurrency), "-n", f"w{i}-{uuid.uuid4().hex[:6]}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat",
                 "-l", "INFO", "-E"],
                cwd=ROOT, env=worker_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
            self.procs.append(proc)
        if wait:
            self.wait_ready(len(self.procs))

    def wait_ready(self, n: int, timeout: float = 60.0) -> None:
        """Wait until `n` workers answer a broadcast ping."""
        def ready() -> bool:
            replies = self.client.celery.control.ping(timeout=0.5)
            return len(replies) >= n
        wait_for(ready, timeout, interval=0.2, message=f"{n} celery workers to answer ping")

    def child_pids(self, proc: subprocess.Popen[bytes]) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self, index: int) -> None:
        """SIGKILL worker `index` and its pool children at once."""
        proc = self.procs[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.client.close()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path, broker_url: str | None,
            backend_settings: dict[str, Any],
            ) -> Iterator[Callable[..., WorkerGroup]]:
    """Factory: `workers(n, **settings)` starts n worker processes on a fresh namespace/queue
    (and on the test's broker: see `broker`)."""
    groups: list[WorkerGroup] = []

    def start(n: int = 1, concurrency: int = 1, wait: bool = True,
              **overrides: Any) -> WorkerGroup:
        logdir = tmp_path / f"workers{len(groups)}"
        logdir.mkdir()
        values = dict(backend_settings)
        if broker_url is not None:
            values["broker_url"] = broker_url
        values.update(overrides)
        group = WorkerGroup(make_settings(redis_server.url, **values), logdir)
        groups.append(group)
        group.start(n, concurrency, wait)
        return group

    yield start
    for group in groups:
        group.stop()


FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """`figures(line)`: a measured figure, printed now (`-s`) and in the terminal summary."""
    lines = request.config.stash.setdefault(FIGURES, [])

    def add(line: str) -> None:
        print(line)
        lines.append(f"{request.node.name}: {line}")
    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The figures tests measured (recovery times and the like), after the results."""
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
