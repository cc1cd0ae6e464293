#!/usr/bin/env bash
# Makes sure a real redis-server (and redis-cli, which builds the test suite's
# Redis Cluster) is on PATH: the service's dev stack and every test start their
# own private instances. Installs them when missing and permitted.
set -euo pipefail

have_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

if have_redis; then
  exit 0
fi

install_cmd=""
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    install_cmd="apt-get"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    install_cmd="sudo apt-get"
  fi
fi

if [ -n "$install_cmd" ]; then
  echo "redis-server or redis-cli not found; installing them with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive $install_cmd update -qq
  DEBIAN_FRONTEND=noninteractive $install_cmd install -y -qq redis-server redis-tools >/dev/null
  # The package may start a system instance on 6379; the tests never use it.
  have_redis && exit 0
fi

cat >&2 <<'MSG'
error: redis-server and redis-cli are required (the tests and `facevault dev`
start their own private instances on free ports) and could not be installed
automatically.
Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install redis-server redis-tools
  Fedora:         sudo dnf install redis
  macOS:          brew install redis
MSG
exit 1
