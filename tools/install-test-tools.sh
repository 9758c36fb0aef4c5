#!/bin/sh
# What the tests need beyond the labs: Chromium, to open the built book in a real browser, and cpio, to read
# the VM's initramfs back with an independent tool.
set -eu
command -v chromium >/dev/null 2>&1 && command -v cpio >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium cpio \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium cpio; }
else
    echo "The tests need Chromium and cpio: install them (Debian/Ubuntu: apt-get install chromium cpio)." >&2
    exit 1
fi
