"""Flower with `/metrics` and `/healthcheck` behind its own auth.

Flower 2.2 serves those two handlers without authentication (they lack the
`tornado.web.authenticated` decorator its other views have) and has no option to change that,
so `jido-tasks flower` runs Flower through this module, which adds the decorator before Flower
builds its app. Run as `python -m jido_tasks.ops.flower -A jido_tasks.celery_app flower ...`.
"""

from __future__ import annotations

import sys

import tornado.web


def protect_monitor_views() -> None:
    """Put Flower's metrics and health check behind the same auth as its other views."""
    from flower.views import monitor

    for view in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(view.get, "_jido_protected", False):
            view.get = tornado.web.authenticated(view.get)
            view.get._jido_protected = True


def main() -> None:
    from celery.bin.celery import main as celery_main

    protect_monitor_views()
    sys.exit(celery_main())


if __name__ == "__main__":
    main()
