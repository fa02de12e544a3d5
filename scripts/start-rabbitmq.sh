#!/usr/bin/env bash
# RabbitMQ for the broker matrix of the tests (tests/conftest.py: a vhost of the test run's own
# on 127.0.0.1:5672). Idempotent: nothing to do when something answers on 5672; otherwise
# install rabbitmq-server from Debian's packages when it is missing, start it and wait for it.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if answers; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q rabbitmq-server
fi
# The package may have started it (where services run at install); start it only if not.
if ! answers; then
  $SUDO rabbitmq-server -detached
fi
# Not `rabbitmqctl await_startup` right away: it fails (exit 69) while the detached node has not
# yet registered with epmd. The AMQP listener opens once the node has booted.
for _ in $(seq 1 120); do
  if answers; then exit 0; fi
  sleep 1
done
echo "error: RabbitMQ did not open 127.0.0.1:5672" >&2
exit 1
