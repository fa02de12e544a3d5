"""Reaching a protected Redis: a password and an ACL user in `redis_url`, a wrong password as a
clear error at start, and `rediss://` (TLS) with its options passed to every connection: the
registry's (sync and async), the Celery broker's and the result backend's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jido_tasks import AsyncClient, Client
from jido_tasks.errors import ConfigError, RedisAuthFailed, RedisUnavailable
from jido_tasks.ops.checks import EX_CONFIG
from jido_tasks.settings import load_settings
from jido_tasks.worker.app import celery_config
from tests.conftest import (
    REDIS_SERVER,
    ROOT,
    RedisServer,
    WorkerGroup,
    free_port,
    make_settings,
    wait_for,
    worker_env,
)

PASSWORD = "s3cret-default"
USER, USER_PASSWORD = "jt", "pw-of-jt"
WRONG = "not-the-password"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with a password on its default user and an ACL user `jt`."""
    server = RedisServer(tmp_path, args=("--requirepass", PASSWORD))
    server.start()
    admin = redis.Redis(port=server.port, password=PASSWORD)
    admin.acl_setuser(USER, enabled=True, passwords=[f"+{USER_PASSWORD}"], keys=["~*"],
                      channels=["*"], commands=["+@all"])
    admin.close()
    yield server
    server.kill()


def apply_one_each_way(group: WorkerGroup) -> str:
    """A new session gets one action through `Client.call` (registry and broker), then its
    state by name (the result backend too); returns the session id."""
    c = group.client
    sid = c.create_session().id
    assert c.call(sid, "test.append", {"value": 1}, timeout=30) == 1
    result = c.celery.send_task("jido_tasks.get_state", args=[sid], queue=group.settings.queue)
    assert result.get(timeout=30) == {"items": [1]}
    return sid


def url_of(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def test_acl_user_works_end_to_end(acl_redis: RedisServer, tmp_path: Path) -> None:
    """`redis://jt:pw@...` as `redis_url` (so also the broker and the result backend): a worker
    applies the session's actions, and every connection is the ACL user's."""
    group = WorkerGroup(make_settings(url_of(acl_redis, USER, USER_PASSWORD)), tmp_path)
    try:
        group.start(1)
        apply_one_each_way(group)
        admin = redis.Redis(port=acl_redis.port, password=PASSWORD, decode_responses=True)
        me = admin.client_id()
        users = {entry["user"] for entry in admin.client_list() if int(entry["id"]) != me}
        assert users == {USER}, users
        admin.close()
    finally:
        group.stop()


@pytest.mark.parametrize("credentials", ["wrong password", "ACL user, wrong password",
                                         "no password"])
def test_refused_credentials_are_a_typed_error(acl_redis: RedisServer,
                                               credentials: str) -> None:
    """The first call raises `RedisAuthFailed` (a `RedisUnavailable`) naming the URL without
    its password; the async client likewise."""
    url = {"wrong password": url_of(acl_redis, "", WRONG),
           "ACL user, wrong password": url_of(acl_redis, USER, WRONG),
           "no password": acl_redis.url}[credentials]
    settings = make_settings(url)
    client = Client(settings)
    with pytest.raises(RedisAuthFailed) as err:
        client.create_session()
    client.close()
    assert isinstance(err.value, RedisUnavailable)
    assert err.value.where == url.replace(f":{WRONG}@", ":***@")
    assert WRONG not in str(err.value)
    assert "refused the credentials" in str(err.value)

    async def first_call() -> None:
        async with AsyncClient(settings) as aclient:
            await aclient.create_session()

    with pytest.raises(RedisAuthFailed) as aerr:
        asyncio.run(first_call())
    assert aerr.value.where == err.value.where


def test_wrong_password_stops_the_cli_and_the_worker_at_start(acl_redis: RedisServer,
                                                              tmp_path: Path) -> None:
    """`jido-tasks check` exits 1 and a worker stops at start, each with one clear line naming
    the URL with its password hidden, never the password."""
    settings = make_settings(url_of(acl_redis, USER, WRONG))
    proc = subprocess.run([sys.executable, "-m", "jido_tasks.cli", "check"], cwd=ROOT,
                          env=worker_env(settings), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: Redis at redis://{USER}:***@127.0.0.1:{acl_redis.port}/0 refused the "
        "credentials: invalid username-password pair or user is disabled. (give the user and "
        "password in the URL: redis://user:password@host:port/db)")
    up = subprocess.run([sys.executable, "-m", "jido_tasks.cli", "up"], cwd=tmp_path,
                        env=worker_env(settings), capture_output=True, text=True, timeout=60)
    assert up.returncode == 1
    assert up.stderr.strip() == proc.stderr.strip()  # not "no Redis answers" (nor a new Redis)
    group = WorkerGroup(settings, tmp_path)
    try:
        group.start(1, wait=False)
        assert group.procs[0].wait(60) == EX_CONFIG  # not restarted by `up`
        logs = group.logs()
        assert f"Redis at redis://{USER}:***@127.0.0.1:{acl_redis.port}/0 refused" in logs
        assert WRONG not in logs
    finally:
        group.stop()


def test_tls_options_reach_celery_only_for_rediss_urls(tmp_path: Path) -> None:
    """`broker_use_ssl` / `redis_backend_use_ssl` are set from the `redis_ssl_*` settings for
    a `rediss://` broker or result backend only (set for `redis://` they would turn TLS on)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    plain = celery_config(make_settings("redis://127.0.0.1:1/0", redis_ssl_ca_certs=ca))
    assert "broker_use_ssl" not in plain and "redis_backend_use_ssl" not in plain
    tls = make_settings("rediss://127.0.0.1:1/0", redis_ssl_ca_certs=ca,
                        broker_url="amqp://guest:guest@127.0.0.1:5672/x")
    config = celery_config(tls)
    assert "broker_use_ssl" not in config
    assert config["redis_backend_use_ssl"] == {"ssl_cert_reqs": "required",
                                               "ssl_ca_certs": str(ca)}
    both = celery_config(make_settings("rediss://127.0.0.1:1/0", redis_ssl_cert_reqs="none"))
    assert both["broker_use_ssl"] == both["redis_backend_use_ssl"] == {"ssl_cert_reqs": "none"}
    with pytest.raises(ConfigError) as missing:
        load_settings(redis_url="rediss://127.0.0.1:1/0", redis_ssl_ca_certs=tmp_path / "no.pem")
    assert missing.value.setting == "JIDO_TASKS_REDIS_SSL_CA_CERTS"


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server that speaks TLS only (its own self-signed certificate): its `rediss://`
    URL and the certificate that verifies it."""
    cert, key = make_cert(tmp_path, "redis")
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
         str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))

    def answers() -> bool:
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 10, message=f"TLS redis-server on {port}")
        probe.close()
        yield f"rediss://127.0.0.1:{port}/0", cert
    finally:
        proc.kill()
        proc.wait()


def test_rediss_end_to_end(tls_redis: tuple[str, Path], tmp_path: Path) -> None:
    """With `redis_url=rediss://...` and the CA in `redis_ssl_ca_certs`, the registry (sync
    and async clients), the broker and the result backend all work over TLS; a certificate
    that does not verify is a `RedisUnavailable`, not a silently unverified connection."""
    url, cert = tls_redis
    settings = make_settings(url, redis_ssl_ca_certs=cert)
    group = WorkerGroup(settings, tmp_path / "w")
    (tmp_path / "w").mkdir()
    try:
        group.start(1)
        sid = apply_one_each_way(group)

        async def async_call() -> object:
            async with AsyncClient(settings) as aclient:
                return await aclient.call(sid, "test.append", {"value": 2}, timeout=30)

        assert asyncio.run(async_call()) == 2
    finally:
        group.stop()
    other, _ = make_cert(tmp_path, "other")
    stranger = Client(make_settings(url, redis_ssl_ca_certs=other))
    with pytest.raises(RedisUnavailable) as err:
        stranger.create_session()
    stranger.close()
    assert "certificate verify failed" in str(err.value)


def test_the_fetch_outlives_an_acl_change_while_it_waits(acl_redis: RedisServer,
                                                         tmp_path: Path) -> None:
    """A worker waiting on its queue (its fetch's BLMOVE in flight) when the ACL user's
    password is rotated and its connections killed: it cannot fetch while its password is
    refused; what is sent meanwhile (by a client of another user) is kept, and once the
    password is back the worker authenticates again and applies every action once, in order."""
    settings = make_settings(url_of(acl_redis, USER, USER_PASSWORD))
    group = WorkerGroup(settings, tmp_path)
    admin = redis.Redis(port=acl_redis.port, password=PASSWORD)
    other = Client(make_settings(f"redis://:{PASSWORD}@127.0.0.1:{acl_redis.port}/0",
                                 namespace=settings.namespace, queue=settings.queue))
    try:
        group.start(1)
        sid = apply_one_each_way(group)  # it has fetched: now it waits
        admin.execute_command("ACL", "SETUSER", USER, f"<{USER_PASSWORD}", ">rotated")
        admin.execute_command("CLIENT", "KILL", "USER", USER)
        handles = [other.send(sid, "test.append", {"value": v}) for v in range(2, 12)]
        time.sleep(3)  # the worker tries to reconnect with the refused password meanwhile
        assert other.get_state(sid) == {"items": [1]}
        admin.execute_command("ACL", "SETUSER", USER, f">{USER_PASSWORD}")
        for handle in handles:
            handle.get(timeout=90)
        assert other.get_state(sid) == {"items": list(range(1, 12))}
        holding = admin.hgetall("_kombu.holding")
        assert all(admin.llen(key) == 0 for key in holding), holding
    finally:
        other.close()
        admin.close()
        group.stop()
