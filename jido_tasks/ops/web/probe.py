"""Health probe for containers: `python -m jido_tasks.ops.web.probe URL` exits 0 on HTTP 200.

Sends the first `JIDO_TASKS_FLOWER_BASIC_AUTH` credentials, so it can check Flower's
`/healthcheck` and the metrics server, both behind basic auth.
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 4.0) -> int:
    """0 if `url` answers 200, else 1."""
    request = urllib.request.Request(url)
    auth = os.environ.get("JIDO_TASKS_FLOWER_BASIC_AUTH", "").split(",")[0]
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m jido_tasks.ops.web.probe URL")
    sys.exit(probe(sys.argv[1]))
