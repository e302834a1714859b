#!/usr/bin/env bash
# The archive tests run against a throw-away PostgreSQL server that the suite starts itself (tests/pg_support.py)
# from Debian's binaries. Install them when missing and allowed; otherwise those tests are skipped with the reason.
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian postgresql for the archive tests…" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
    || echo "warning: could not install postgresql; the PostgreSQL archive tests will be skipped" >&2
else
  echo "warning: PostgreSQL not found and not root; the PostgreSQL archive tests will be skipped (apt-get install postgresql)" >&2
fi
exit 0
