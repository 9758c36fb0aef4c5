#!/bin/sh
# What the tests need beyond the labs: Chromium, to open the built book in a real browser.
set -eu
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
else
    echo "The book test needs Chromium: install the chromium package (Debian/Ubuntu: apt-get install chromium)." >&2
    exit 1
fi
