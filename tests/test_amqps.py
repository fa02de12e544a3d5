"""`amqps://` brokers: the `amqp_ssl_*` settings (CA, client certificate and key) reach kombu,
against a private RabbitMQ node that speaks TLS only and asks for a client certificate."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jido_tasks import Client
from jido_tasks.core.celery_config import celery_config
from tests.conftest import RedisServer, WorkerGroup, free_port, make_settings


@dataclass
class TlsRabbit:
    url: str
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> None:
    """A CA, and a server (127.0.0.1) and a client certificate it signed (RabbitMQ refuses a
    self-signed peer certificate)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=jido-test-ca", "-keyout", str(directory / "ca.key"),
             "-out", str(directory / "ca.pem"))
    for name in ("server", "client"):
        (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(directory / f"{name}.csr"), "-CA",
                 str(directory / "ca.pem"), "-CAkey", str(directory / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-out", str(directory / f"{name}.pem"),
                 "-extfile", str(directory / f"{name}.ext"))


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def tls_rabbit() -> Iterator[TlsRabbit]:
    """A RabbitMQ node of the test's own (its own name, ports and data), TLS only on
    127.0.0.1, peers verified against a test CA; stopped at the end."""
    assert shutil.which("rabbitmq-server"), "rabbitmq-server is not installed " \
        "(scripts/start-rabbitmq.sh installs it)"
    # Debian's rabbitmq-server runs the node as the `rabbitmq` user, which cannot enter
    # pytest's private tmp_path: a directory of its own under /tmp, removed at the end.
    home = Path(tempfile.mkdtemp(prefix="jido-rabbit-"))
    make_pki(home)
    port, dist = free_port(), free_port()
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {home}/ca.pem\nssl_options.certfile = {home}/server.pem\n"
        f"ssl_options.keyfile = {home}/server.key\nssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\nloopback_users = none\n")
    (home / "enabled_plugins").write_text("[].\n")
    node = f"jt{uuid.uuid4().hex[:8]}@localhost"
    env = {**os.environ, "RABBITMQ_NODENAME": node, "RABBITMQ_CONF_ENV_FILE": "/dev/null",
           "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"), "RABBITMQ_DIST_PORT": str(dist),
           "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
           "RABBITMQ_MNESIA_DIR": str(home / "mnesia" / "node"),
           "RABBITMQ_FEATURE_FLAGS_FILE": str(home / "mnesia" / "feature_flags"),
           "RABBITMQ_PLUGINS_EXPAND_DIR": str(home / "mnesia" / "plugins"),
           "RABBITMQ_LOG_BASE": str(home / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
           "ERL_EPMD_ADDRESS": "127.0.0.1"}
    for sub in ("mnesia", "log"):
        (home / sub).mkdir()
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(home)], check=False)
    log = open(home / "server.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["rabbitmq-server"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the TLS RabbitMQ node did not start: "
                                     + (home / "server.out").read_text(errors="replace")[-2000:])
            time.sleep(0.25)
        yield TlsRabbit(f"amqps://guest:guest@127.0.0.1:{port}//", home / "ca.pem",
                        home / "client.pem", home / "client.key")
    finally:
        subprocess.run(["rabbitmqctl", "-n", node, "stop"], env=env, capture_output=True,
                       timeout=60, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_amqps_options_reach_celery_only_for_amqps_urls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = make_settings("redis://127.0.0.1:1/0", broker_url="amqps://u:p@127.0.0.1:1//",
                             amqp_ssl_ca_certs=ca, amqp_ssl_certfile=ca, amqp_ssl_keyfile=ca)
    assert celery_config(settings)["broker_use_ssl"] == {
        "ca_certs": str(ca), "certfile": str(ca), "keyfile": str(ca),
        "cert_reqs": ssl.CERT_REQUIRED}
    plain = make_settings("redis://127.0.0.1:1/0", broker_url="amqp://u:p@127.0.0.1:1//",
                          amqp_ssl_ca_certs=ca)
    assert "broker_use_ssl" not in celery_config(plain)


def test_amqps_end_to_end(tls_rabbit: TlsRabbit, redis_server: RedisServer,
                         tmp_path: Path) -> None:
    """A worker and a client on the TLS broker, with the CA, client certificate and key from
    the settings: an action is sent and applied, and a by-name task's result read; without
    the client certificate the broker refuses the connection."""
    settings = make_settings(redis_server.url, broker_url=tls_rabbit.url,
                             amqp_ssl_ca_certs=tls_rabbit.ca, amqp_ssl_certfile=tls_rabbit.cert,
                             amqp_ssl_keyfile=tls_rabbit.key)
    (tmp_path / "workers").mkdir()
    group = WorkerGroup(settings, tmp_path / "workers")
    try:
        group.start(1)
        c = group.client
        sid = c.create_session().id
        assert c.call(sid, "test.append", {"value": 1}, timeout=30) == 1
        result = c.celery.send_task("jido_tasks.get_state", args=[sid], queue=settings.queue)
        assert result.get(timeout=30) == {"items": [1]}
    finally:
        group.stop()
    no_cert = Client(make_settings(redis_server.url, broker_url=tls_rabbit.url,
                                   amqp_ssl_ca_certs=tls_rabbit.ca))
    try:
        with pytest.raises(ssl.SSLError), no_cert.celery.connection_for_write() as conn:
            conn.connect()
    finally:
        no_cert.close()
