#!/usr/bin/env bash
# What `npm test` needs besides npm packages, brought in by the test command
# itself: the Debian packages some tests start for real (redis-server for the
# discovery tests, chromium for the drill report's page, openssl for the
# cluster CA of the peer TLS and SQL port TLS tests, psql from
# postgresql-client for the SQL port's libpq tests, psycopg 3 for Debian's
# own python3 for the SQL port's Python test, pgJDBC and a JDK for its Java
# test, run as a single source file). Whatever is missing is
# installed with apt-get when this runs as root; otherwise it says what to
# install, and the tests do not start.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
command -v psql >/dev/null || missing+=(postgresql-client)
/usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1 || missing+=(python3-psycopg)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || missing+=(default-jdk-headless)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "npm test: installing Debian packages the tests need: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "npm test: the tests need these Debian packages, which are missing: ${missing[*]}" >&2
  echo "  install them first: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
