#!/bin/sh
# Make sure Postfix's smtp-sink (the benchmark's server) is installed.
# Installs the Debian package "postfix" when it is missing and we are root.
set -u

if command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ]; then
    exit 0
fi

fail() {
    echo "make bench: smtp-sink (Postfix) is not installed and $1." >&2
    echo "make bench: install it with: apt-get install postfix (Debian/Ubuntu)," >&2
    echo "make bench: or put an smtp-sink binary on PATH, then run make bench again." >&2
    exit 1
}

if [ "$(id -u)" != "0" ]; then
    fail "this is not root, so it cannot be installed here"
fi
if ! command -v apt-get >/dev/null 2>&1; then
    fail "there is no apt-get to install it with"
fi

echo "make bench: installing Postfix for smtp-sink (apt-get install postfix)..."
apt-get update || fail "apt-get update failed"
# Postfix's own daemon is not needed: only the smtp-sink test program is used.
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix \
    || fail "apt-get install postfix failed"

if ! command -v smtp-sink >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-sink ]; then
    fail "the postfix package did not provide /usr/sbin/smtp-sink"
fi
echo "make bench: smtp-sink installed at $(command -v smtp-sink || echo /usr/sbin/smtp-sink)"
