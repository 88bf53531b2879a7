# Sourced by scripts/test.sh: the cloud warehouses' local stand-ins from PyPI, each installed once
# into a cached virtual environment ($XDG_CACHE_HOME/sallyport-test, default ~/.cache) and started
# when it is not running:
#   - Databricks: brickhouse 0.1.0 (the SQL Statement Execution API over a local engine) on 8090;
#   - BigQuery: crucible-emulator 0.1.0a2 (its REST API over DuckDB) on 9051;
#   - Snowflake: fakesnow 0.12.1 (the connector protocol over DuckDB) on 8089.
# Needs the helpers of test.sh: say, die.

standins="${XDG_CACHE_HOME:-$HOME/.cache}/sallyport-test"
mkdir -p "$standins"

venv() { # name pip-requirements...
  local name=$1; shift
  local dir="$standins/$name"
  if [ ! -x "$dir/bin/python" ] || [ ! -f "$dir/.installed" ] || [ "$(cat "$dir/.installed")" != "$*" ]; then
    command -v python3 >/dev/null 2>&1 || die "the $name stand-in needs python3 (apt-get install python3 python3-venv)"
    say "installing the $name stand-in from PyPI into $dir (once)"
    rm -rf "$dir"
    if ! python3 -m venv "$dir" >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing python3-venv from Debian's packages (for the stand-ins)"
        rm -rf "$dir"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
          || die "cannot install python3-venv with apt-get"
        python3 -m venv "$dir" >/dev/null 2>&1 || die "python3 cannot make a virtual environment"
      else
        die "python3 cannot make a virtual environment: install python3-venv (apt-get install python3-venv)"
      fi
    fi
    "$dir/bin/pip" install -q "$@" >"$dir.pip.log" 2>&1 \
      || { tail -n 5 "$dir.pip.log" >&2; die "pip could not install $*"; }
    printf '%s' "$*" >"$dir/.installed"
  fi
}

http_answers() { # url
  python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" >/dev/null 2>&1
}

# Databricks.
venv brickhouse "brickhouse==0.1.0"
export SALLYPORT_TEST_DATABRICKS_HOST="http://127.0.0.1:8090"
if ! http_answers "$SALLYPORT_TEST_DATABRICKS_HOST/api/2.0/sql/warehouses"; then
  ws="$standins/brickhouse-workspace"
  [ -d "$ws" ] || "$standins/brickhouse/bin/brickhouse" init --workspace "$ws" >/dev/null \
    || die "brickhouse could not make its workspace"
  say "starting the Databricks stand-in (brickhouse) on 8090"
  nohup "$standins/brickhouse/bin/brickhouse" serve --workspace "$ws" --host 127.0.0.1 --port 8090 \
    >"$standins/brickhouse.log" 2>&1 &
  for _ in $(seq 1 60); do
    http_answers "$SALLYPORT_TEST_DATABRICKS_HOST/api/2.0/sql/warehouses" && break
    sleep 0.5
  done
  http_answers "$SALLYPORT_TEST_DATABRICKS_HOST/api/2.0/sql/warehouses" \
    || { tail -n 5 "$standins/brickhouse.log" >&2; die "the Databricks stand-in did not start"; }
fi
SALLYPORT_TEST_DATABRICKS_WAREHOUSE=$(python3 - "$SALLYPORT_TEST_DATABRICKS_HOST" <<'PY'
import json, sys, urllib.request
base = sys.argv[1] + "/api/2.0/sql/warehouses"
found = json.load(urllib.request.urlopen(base)).get("warehouses") or []
if not found:
    req = urllib.request.Request(base, method="POST", data=json.dumps({
        "name": "sallyport-tests", "cluster_size": "2X-Small", "max_num_clusters": 1,
        "warehouse_type": "PRO", "enable_serverless_compute": True}).encode())
    found = [json.load(urllib.request.urlopen(req))]
print(found[0]["id"])
PY
) || die "the Databricks stand-in has no SQL warehouse"
export SALLYPORT_TEST_DATABRICKS_WAREHOUSE

# BigQuery: crucible-emulator 0.1.0a2 (the REST API over a local engine) on 9051.
venv crucible "crucible-emulator[server]==0.1.0a2"
export SALLYPORT_TEST_BIGQUERY_ENDPOINT="http://127.0.0.1:9051"
export SALLYPORT_TEST_BIGQUERY_PROJECT="sallyport-test"
if ! http_answers "$SALLYPORT_TEST_BIGQUERY_ENDPOINT/bigquery/v2/projects/$SALLYPORT_TEST_BIGQUERY_PROJECT/datasets"; then
  say "starting the BigQuery stand-in (crucible) on 9051"
  nohup "$standins/crucible/bin/crucible" serve --dialect bigquery --host 127.0.0.1 --port 9051 \
    >"$standins/crucible.log" 2>&1 &
  for _ in $(seq 1 60); do
    http_answers "$SALLYPORT_TEST_BIGQUERY_ENDPOINT/bigquery/v2/projects/$SALLYPORT_TEST_BIGQUERY_PROJECT/datasets" && break
    sleep 0.5
  done
  http_answers "$SALLYPORT_TEST_BIGQUERY_ENDPOINT/bigquery/v2/projects/$SALLYPORT_TEST_BIGQUERY_PROJECT/datasets" \
    || { tail -n 5 "$standins/crucible.log" >&2; die "the BigQuery stand-in did not start"; }
fi

# Snowflake: fakesnow 0.12.1 in server mode (the connector protocol over DuckDB) on 8089. The
# Python connector is pinned below 5: fakesnow 0.12.1 does not import with 5.x.
venv fakesnow "fakesnow[server]==0.12.1" "snowflake-connector-python<5"
export SALLYPORT_TEST_SNOWFLAKE_URL="http://127.0.0.1:8089"
if ! (exec 3<>/dev/tcp/127.0.0.1/8089) 2>/dev/null; then
  say "starting the Snowflake stand-in (fakesnow) on 8089"
  nohup "$standins/fakesnow/bin/fakesnow" -s -p 8089 >"$standins/fakesnow.log" 2>&1 &
  for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/8089) 2>/dev/null && break
    sleep 0.5
  done
  (exec 3<>/dev/tcp/127.0.0.1/8089) 2>/dev/null \
    || { tail -n 5 "$standins/fakesnow.log" >&2; die "the Snowflake stand-in did not start"; }
fi
