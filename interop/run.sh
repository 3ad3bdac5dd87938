#!/bin/sh
# make interop: install Postfix, Cyrus SASL, Dovecot (LMTP and submission) and a private
# Exim (root only), then run tests/interop against private instances of them.
#
# Usage: sh interop/run.sh PYTHON [PYTEST ARGUMENTS...]
# Exits 0 without running anything (and says why) where the servers cannot be
# installed: not root, or not Debian/Ubuntu.
set -u

here=$(cd "$(dirname "$0")" && pwd)
python=${1:?usage: sh interop/run.sh PYTHON [PYTEST ARGUMENTS...]}
shift

sh "$here/install.sh"
status=$?
if [ "$status" -eq 77 ]; then
    echo "make interop: skipped: no interop test was run (see above)."
    exit 0
fi
if [ "$status" -ne 0 ]; then
    echo "make interop: the servers could not be installed (exit $status)." >&2
    exit "$status"
fi

cd "$here/.." || exit 1
# -v: one line per case; tests/interop/conftest.py prints the closing
# "N passed, M failed" line.
ANYSMTP_INTEROP=1 exec "$python" -m pytest tests/interop -v "$@"
