#!/usr/bin/env bash
# Runs the whole test suite. The browser test needs Chromium and chromedriver, installed from
# Debian's packages when missing. The integration tests need PostgreSQL: when none answers at
# SALLYPORT_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), this script
# starts one: from the installed server binaries, or from Debian's packages when it may install
# them (as root). It fails with a clear message when it can do neither.
set -euo pipefail
cd "$(dirname "$0")/.."

export SALLYPORT_TEST_DATABASE_URL="${SALLYPORT_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Under this script every test's requirements are brought up: a test that finds one missing fails
# instead of skipping itself.
export SALLYPORT_TEST_SUITE=1
rest="${SALLYPORT_TEST_DATABASE_URL#*://}"
case "$rest" in *@*) rest="${rest#*@}" ;; esac
hostport="${rest%%/*}"
PGHOST_="${hostport%%:*}"; PGPORT_="${hostport##*:}"; [ "$PGPORT_" = "$hostport" ] && PGPORT_=5432
dbname="${SALLYPORT_TEST_DATABASE_URL##*/}"; dbname="${dbname%%\?*}"

say() { printf 'test.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

answers() {
  # Is a PostgreSQL server accepting connections there?
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$PGHOST_" -p "$PGPORT_" -t 2
  else
    (exec 3<>"/dev/tcp/$PGHOST_/$PGPORT_") 2>/dev/null
  fi
}

find_bin() {
  # A PostgreSQL server binary: on PATH, or in Debian's versioned folder.
  local name=$1 found
  found=$(command -v "$name" 2>/dev/null || true)
  if [ -z "$found" ]; then
    found=$(ls -1d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  printf '%s' "$found"
}

start_cluster() {
  # A throwaway cluster with trust auth, owned by a non-root user (PostgreSQL refuses root).
  local initdb pg_ctl data log runas=()
  initdb=$(find_bin initdb); pg_ctl=$(find_bin pg_ctl)
  [ -n "$initdb" ] && [ -n "$pg_ctl" ] || return 1
  data="${TMPDIR:-/tmp}/sallyport-test-pg-$PGPORT_"
  log="$data.log"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runas=(runuser -u postgres --)
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    rm -rf "$data"; mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres "$data"
    "${runas[@]}" "$initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  touch "$log"; [ "$(id -u)" = 0 ] && chown postgres "$log"
  say "starting PostgreSQL ($data) on $PGHOST_:$PGPORT_"
  if ! "${runas[@]}" "$pg_ctl" -D "$data" -l "$log" -w -t 60 \
      -o "-h $PGHOST_ -p $PGPORT_ -k ${TMPDIR:-/tmp}" start >/dev/null; then
    say "PostgreSQL did not start; its log says:"
    tail -n 5 "$log" >&2 || true
    die "cannot start PostgreSQL on $PGHOST_:$PGPORT_ (is the port taken?)"
  fi
}

stop_stock_cluster() {
  # Installing Debian's package may start its own cluster on 5432, with password logins the
  # tests cannot use: stop it so that the throwaway trust-auth cluster can take the port.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r ver name port _; do
      [ "$port" = "$PGPORT_" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop 2>/dev/null || true
    done || true
  fi
  return 0
}

install_postgres() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  say "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
}

if ! answers; then
  say "no PostgreSQL answers at $PGHOST_:$PGPORT_"
  if [ -n "$(find_bin initdb)" ] && [ -n "$(find_bin pg_ctl)" ]; then
    start_cluster
  elif install_postgres; then
    stop_stock_cluster
    start_cluster
  else
    die "cannot start PostgreSQL: no server binaries (initdb, pg_ctl) are installed and they cannot be installed here (apt-get needs root). Install PostgreSQL, or point SALLYPORT_TEST_DATABASE_URL at a server with trust auth."
  fi
  answers || die "PostgreSQL was started but does not answer at $PGHOST_:$PGPORT_"
fi

# PostgreSQL with and without TLS, a certificate chain, MariaDB (plain and TLS).
# shellcheck source=scripts/tls-services.sh
source "$(dirname "$0")/tls-services.sh"
# The cloud warehouses' stand-ins from PyPI.
# shellcheck source=scripts/standins.sh
source "$(dirname "$0")/standins.sh"

# The browser test drives Debian's Chromium through chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and chromium-driver from Debian's packages (for the browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null \
      || die "cannot install chromium and chromium-driver with apt-get"
  else
    die "the browser test needs Debian's chromium and chromium-driver: install them (apt-get install chromium chromium-driver) or run this script as root"
  fi
fi

# axe-core (from npm) checks every page of the browser test for accessibility problems.
axe_dir="${XDG_CACHE_HOME:-$HOME/.cache}/sallyport-test/axe-core"
if [ ! -f "$axe_dir/node_modules/axe-core/axe.min.js" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing npm from Debian's packages (for the browser test's accessibility check)"
      apt-get install -y -qq npm >/dev/null || die "cannot install npm with apt-get"
    else
      die "the browser test's accessibility check needs npm (apt-get install npm) to install axe-core"
    fi
  fi
  say "installing axe-core from npm into $axe_dir (once)"
  mkdir -p "$axe_dir"
  npm install --prefix "$axe_dir" --no-audit --no-fund --silent axe-core@4 >/dev/null \
    || die "cannot install axe-core from npm into $axe_dir"
fi
export SALLYPORT_TEST_AXE="$axe_dir/node_modules/axe-core/axe.min.js"

# The test database.
if command -v psql >/dev/null 2>&1; then
  if ! psql -h "$PGHOST_" -p "$PGPORT_" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1; then
    psql -h "$PGHOST_" -p "$PGPORT_" -U postgres -d postgres -qc "CREATE DATABASE \"$dbname\"" >/dev/null
  fi
fi

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
