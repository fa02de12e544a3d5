"""A real local Redis Cluster for the tests: three masters started from the `redis-server`
binary (`--cluster-enabled yes`), joined by `redis-cli --cluster create`, on private ports and
directories, stopped by pid."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MAX_PORT = 55535
"""Highest node port: the cluster bus listens on port + 10000."""


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """`n` ports below `MAX_PORT` whose bus ports (+10000) are free too."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= MAX_PORT and port not in found and _bindable(port + 10000):
            found.append(port)
        elif port > MAX_PORT:  # the ephemeral range is above: probe from a random low port
            for candidate in range(20000 + port % 20000, MAX_PORT):
                if candidate not in found and _bindable(candidate) \
                        and _bindable(candidate + 10000):
                    found.append(candidate)
                    break
    return found


class RedisClusterServers:
    """Three cluster-enabled redis-server masters (and `replicas` replicas of each) on private
    ports, joined as one cluster."""

    def __init__(self, tmp: Path, masters: int = 3, replicas: int = 0) -> None:
        self.dir = tmp
        self.replicas = replicas
        self.ports = cluster_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Any node's URL: the cluster client finds the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self.procs[port] = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(node_dir), "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                 "--cluster-require-full-coverage", "no",
                 "--maxmemory-policy", "noeviction"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).ping(), f"node {port}")
        subprocess.run([REDIS_CLI, "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas",
                        str(self.replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).cluster("info")["cluster_state"]
                       == "ok", f"cluster state ok on {port}")
        if self.replicas:
            self._wait(lambda: all(len(entry) > 3 for entry in self._slots()),
                       "every master's replica")

    @staticmethod
    def _wait(check: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                if check():  # type: ignore[operator]
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def master_of(self, slot: int) -> int:
        """The port of the master serving `slot`."""
        for low, high, (_, port, *_rest), *_replicas in self._slots():
            if low <= slot <= high:
                return int(port)
        raise AssertionError(f"no master serves slot {slot}")

    def _slots(self) -> list[Any]:
        """CLUSTER SLOTS, as the first live node answers it."""
        for port in self.ports:
            if port in self.procs and self.procs[port].poll() is None:
                with contextlib.suppress(redis.RedisError):
                    return list(redis.Redis(port=port).execute_command("CLUSTER SLOTS"))
        raise AssertionError("no node answers")

    def node_id(self, port: int) -> str:
        return str(redis.Redis(port=port, decode_responses=True).cluster("myid"))

    def masters(self) -> list[int]:
        """The ports of the masters serving slots (as the first live node sees them)."""
        return sorted({int(entry[2][1]) for entry in self._slots()})

    def replica_of(self, master: int) -> int:
        """The port of a replica of `master`."""
        for _low, _high, (_, port, *_rest), *replicas in redis.Redis(port=master) \
                .execute_command("CLUSTER SLOTS"):
            if int(port) == master and replicas:
                return int(replicas[0][1])
        raise AssertionError(f"master {master} has no replica")

    def move_slot(self, slot: int, dst: int) -> None:
        """Move `slot` and its keys to master `dst` (IMPORTING / MIGRATING / MIGRATE / NODE, as
        `redis-cli --cluster reshard` does): clients with the old map get MOVED or ASK."""
        src = self.master_of(slot)
        source, target = redis.Redis(port=src), redis.Redis(port=dst)
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(src))
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(dst))
        while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        for port in self.masters():
            redis.Redis(port=port).execute_command("CLUSTER", "SETSLOT", slot, "NODE",
                                                   self.node_id(dst))

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self.procs.clear()
