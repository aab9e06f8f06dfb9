#!/bin/sh
# Install Request Tracker 5 from Debian's packages, non-interactively, for the
# integration suite (tests/support/rt_server.py). Idempotent: does nothing when the
# packages are already installed. Needs root (or sudo) and a Debian/Ubuntu host.
set -eu

PKGS="request-tracker5 rt5-db-sqlite rt5-standalone"

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E sh "$0" "$@"
    fi
    echo "install-rt.sh: must run as root (or with sudo available)" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ] && [ -x /usr/share/request-tracker5/libexec/rt-server ]; then
    echo "install-rt.sh: request-tracker5 already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Answers for the packages' debconf questions: no database set-up by dbconfig
# (the test fixture creates its own SQLite database per test session).
debconf-set-selections <<'SEL'
request-tracker5 request-tracker5/rtname string rt.example.test
request-tracker5 request-tracker5/organization string example.test
request-tracker5 request-tracker5/correspondaddress string rt@example.test
request-tracker5 request-tracker5/commentaddress string rt-comment@example.test
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1
request-tracker5 request-tracker5/webpath string /rt
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
request-tracker5 request-tracker5/install-cronjobs boolean false
request-tracker5 request-tracker5/dbconfig-install boolean false
request-tracker5 request-tracker5/dbconfig-upgrade boolean false
request-tracker5 request-tracker5/dbconfig-remove boolean false
rt5-db-sqlite rt5-db-sqlite/available boolean true
SEL

apt-get update -q
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $PKGS

test -x /usr/share/request-tracker5/libexec/rt-server
command -v rt-setup-database-5 >/dev/null
echo "install-rt.sh: request-tracker5 installed"
