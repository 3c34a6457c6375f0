#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the tune tests (a real study database): they
# use initdb and pg_ctl from PATH or from Debian's /usr/lib/postgresql/<version>/bin. Installs
# Debian's `postgresql` package when they are missing and this runs as root (CI does).
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: no PostgreSQL server binaries and cannot install them (needs root and" \
        "apt-get); the PostgreSQL tune tests will be skipped" >&2
    exit 0
fi
echo "installing Debian's postgresql package for the tune tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
