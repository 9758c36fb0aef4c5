"""The app's healthcheck: exit 0 when GET /healthz answers 200 within two seconds, else 1."""

import sys
import urllib.request

try:
    with urllib.request.urlopen("http://127.0.0.1:3000/healthz", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
