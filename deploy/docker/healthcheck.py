"""Docker HEALTHCHECK of a microshop image: healthy while the service answers 200 on its /readyz.

The images carry no curl. The port comes from the service's own setting (``<NAME>_PORT``, ``MICROSHOP_SERVICE``
names the service), so a changed port keeps the check right; ``MICROSHOP_HEALTHCHECK_URL`` replaces the URL.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def health_url(env: dict[str, str]) -> str:
    if env.get("MICROSHOP_HEALTHCHECK_URL"):
        return env["MICROSHOP_HEALTHCHECK_URL"]
    service = env.get("MICROSHOP_SERVICE", "")
    port = env.get(f"{service.upper()}_PORT")
    if not service or not port:
        raise SystemExit(f"healthcheck: MICROSHOP_SERVICE={service!r} and {service.upper()}_PORT={port!r} must be set")
    return f"http://127.0.0.1:{port}/readyz"


def main() -> int:
    url = health_url(dict(os.environ))
    if not url.startswith("http://127.0.0.1:"):
        print(f"healthcheck: only a loopback http URL is checked, got {url!r}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback http only (checked above)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
