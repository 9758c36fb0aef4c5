#!/bin/sh
# Create the project's virtual environment; on Debian as root, install python3-venv first if it is missing.
set -eu
python=$1
venv=$2
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip
        python=python3
    else
        echo "Python 3.11+ with venv is needed: install python3 and python3-venv (e.g. apt-get install python3-venv)." >&2
        exit 1
    fi
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "Python 3.11+ is needed; $python is $("$python" --version 2>&1)." >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
