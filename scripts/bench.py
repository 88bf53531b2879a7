#!/usr/bin/env python3
"""Whole-run benchmark of `sallyport sync` against PostgreSQL and the Customer.io sandbox.

Builds (or reuses) PostgreSQL tables of people (12 columns of mixed types) and events, starts the
sandbox without faults, and measures, in one run, each case against a reference measured in the
same run: the time `psql` takes to export the same model as CSV to /dev/null.

    scripts/bench.py                 # 1,000,000 people and events, plus 5,000,000 people for memory
    scripts/bench.py --rows 100000 --big-rows 0 --no-build   # a quick look
    scripts/bench.py --warehouses mysql   # MySQL/MariaDB only (reference: the `mysql` client's
                                          # batch export of the same rows to /dev/null)

    scripts/bench.py --warehouses diff    # change detection, local vs in the warehouse, on
                                          # 10,000,000 and 1,000,000 PostgreSQL rows, each case
                                          # through a byte-counting proxy, unthrottled and at
                                          # 100 Mbit/s (reference: psql's CSV export through it)

MySQL needs a MariaDB (its SEQUENCE engine makes the rows) at --mysql-url (default
mysql://root@127.0.0.1:3306/test; scripts/test.sh starts one) and the `mariadb`/`mysql` client.

Needs: a PostgreSQL with trust auth (SALLYPORT_TEST_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/test; scripts/test.sh starts one), psql, cargo.
Prints a Markdown table (for BENCHMARKS.md) and writes the figures as JSON to bench-out/.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "sallyport")
SCHEMA = "sallyport_bench"


def psql(url, sql, capture=False):
    out = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
    )
    return out.stdout.strip() if capture else None


def people_sql(table, n):
    return f"""
    DROP TABLE IF EXISTS {SCHEMA}.{table};
    CREATE TABLE {SCHEMA}.{table} AS
    SELECT g::bigint AS user_id,
           'user' || g || '@example.com' AS email,
           'First' || (g % 1000) AS first_name,
           'Last' || (g % 5000) AS last_name,
           (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3] AS plan,
           (ARRAY['GB', 'FR', 'DE', 'US', 'BR'])[1 + g % 5] AS country,
           timestamptz '2024-01-01' + g * interval '1 minute' AS signed_up_at,
           date '2020-01-01' + (g % 1500) AS last_seen,
           ((g % 100000) / 100.0)::numeric(12, 2) AS lifetime_value,
           ((g % 997) / 7.0)::float8 AS score,
           g % 2 = 0 AS active,
           jsonb_build_object('segment', g % 10, 'beta', g % 3 = 0) AS prefs
    FROM generate_series(1, {n}) g;
    ALTER TABLE {SCHEMA}.{table} ADD PRIMARY KEY (user_id);
    ANALYZE {SCHEMA}.{table};"""


def events_sql(table, n, people):
    return f"""
    DROP TABLE IF EXISTS {SCHEMA}.{table};
    CREATE TABLE {SCHEMA}.{table} AS
    SELECT 'ev-' || g AS event_id,
           (g % {people}) + 1 AS user_id,
           (ARRAY['purchase', 'signup', 'upgrade'])[1 + g % 3] AS event,
           (g % 50000)::int AS amount_cents,
           (ARRAY['Widget', 'Gadget', 'Gizmo'])[1 + g % 3] AS product,
           timestamptz '2025-01-01' + g * interval '1 second' AS happened_at
    FROM generate_series(1, {n}) g;
    ANALYZE {SCHEMA}.{table};"""


def ensure_table(url, table, n, make_sql, rebuild):
    exists = psql(
        url,
        f"SELECT count(*) FROM pg_tables WHERE schemaname = '{SCHEMA}' AND tablename = '{table}'",
        capture=True,
    )
    if exists == "1" and not rebuild:
        count = int(psql(url, f"SELECT count(*) FROM {SCHEMA}.{table}", capture=True))
        if count == n:
            return
    print(f"building {SCHEMA}.{table} ({n:,} rows)...", file=sys.stderr)
    psql(url, make_sql)
    # Every row's visibility settled now, not by the first reads (which would write the whole
    # table again and make the reference slower than it is), and nothing left for autovacuum.
    psql(url, f"VACUUM (ANALYZE) {SCHEMA}.{table}")


def reference(url, table, repeat=3):
    """Median seconds for psql to export the model as CSV to /dev/null."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            ["psql", url, "-qc", f"\\copy (SELECT * FROM {SCHEMA}.{table}) TO '/dev/null' CSV"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds a process has used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sync(config, sync, full_resync=False):
    """Runs `sallyport sync SYNC --json`: (seconds, peak RSS in MB, summary, CPU seconds)."""
    args = [BIN, "--config", config, "sync", sync, "--json"]
    if full_resync:
        args.append("--full-resync")
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"sync {sync} exited {code}:\n{out}\n{err}")
    summary = json.loads(out.strip().splitlines()[-1])
    summary["cpu_s"] = usage.ru_utime + usage.ru_stime
    return seconds, usage.ru_maxrss / 1024.0, summary


def sandbox_get(base, path, method="GET"):
    req = urllib.request.Request(base + path, method=method)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def mysql_cli(url):
    """The client command line for a mysql:// URL (user, password, host, port, database)."""
    from urllib.parse import urlparse, unquote
    u = urlparse(url)
    cli = shutil.which("mariadb") or shutil.which("mysql")
    if not cli:
        sys.exit("the MySQL benchmark needs the mariadb or mysql client")
    args = [cli, "-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", unquote(u.username or "root")]
    if u.password:
        args.append("-p" + unquote(u.password))
    args.append((u.path or "/test").lstrip("/") or "test")
    return args


def mysql(url, sql, capture=False, quiet=False):
    out = subprocess.run(mysql_cli(url) + ["--batch", "--skip-column-names", "-e", sql], check=True,
                         stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL if quiet else None, text=True)
    return out.stdout.strip() if capture else None


def mysql_people(url, table, n, rebuild):
    """The people table in MySQL's own types, made from MariaDB's SEQUENCE engine."""
    if not rebuild:
        try:
            if int(mysql(url, f"SELECT count(*) FROM {table}", capture=True, quiet=True)) == n:
                return
        except subprocess.CalledProcessError:
            pass
    print(f"making {table} ({n:,} rows) in MySQL", file=sys.stderr)
    mysql(url, f"""
    DROP TABLE IF EXISTS {table};
    CREATE TABLE {table} (user_id bigint PRIMARY KEY, email varchar(100), first_name varchar(50),
        last_name varchar(50), plan enum('free','pro','enterprise','free+','pro+','enterprise+'),
        country char(2), signed_up_at timestamp NULL, last_seen date, lifetime_value decimal(12,2),
        score double, active tinyint(1), prefs json);
    INSERT INTO {table}
    SELECT seq, concat('user', seq, '@example.com'), concat('First', seq % 1000),
           concat('Last', seq % 5000), elt(1 + seq % 3, 'free', 'pro', 'enterprise'),
           elt(1 + seq % 5, 'GB', 'FR', 'DE', 'US', 'BR'),
           timestamp '2024-01-01 00:00:00' + interval seq minute,
           date '2020-01-01' + interval (seq % 1500) day, (seq % 100000) / 100.0, (seq % 997) / 7.0,
           seq % 2 = 0, json_object('segment', seq % 10, 'beta', seq % 3 = 0)
    FROM seq_1_to_{n};""")


def mysql_reference(url, table, repeat=3):
    """Median seconds for the mysql client to export the model in batch mode to /dev/null."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with open(os.devnull, "w") as null:
            subprocess.run(mysql_cli(url) + ["--batch", "--quick", "-e", f"SELECT * FROM {table}"],
                           check=True, stdout=null)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_mysql(a, base, work):
    """First, unchanged and 1 % changed syncs from MySQL, and memory at two sizes."""
    url, n, big = a.mysql_url, a.rows, a.mysql_big_rows
    mysql_people(url, f"sallyport_bench_people_{n}", n, a.rebuild)
    if big:
        mysql_people(url, f"sallyport_bench_people_{big}", big, a.rebuild)

    def config(name, table):
        path = os.path.join(work, name + ".yaml")
        with open(path, "w") as f:
            f.write(f"""state: {name}.db
warehouses:
  my: {{type: mysql, url: "{url}"}}
apps:
  cio:
    type: customerio
    site_id: sandbox-site
    api_key: sandbox-key
    track_url: {base}
    delivery: {{requests_per_second: {a.requests_per_second}, concurrency: 8}}
syncs:
  people: {{warehouse: my, model: {{table: {table}}}, app: cio, object: person, mode: upsert, primary_key: user_id}}
""")
        return path

    table = f"sallyport_bench_people_{n}"
    cfg = config("mysql", table)
    ref = mysql_reference(url, table)
    sandbox_get(base, "/_sandbox/reset", "POST")
    t1, rss1, s1 = run_sync(cfg, "people")
    assert s1["rows_sent"] == n, s1
    t2, rss2, s2 = run_sync(cfg, "people")
    assert s2["rows_sent"] == 0, s2
    mysql(url, f"UPDATE {table} SET plan = concat(plan, '+') WHERE user_id % 100 = 0")
    try:
        t3, rss3, s3 = run_sync(cfg, "people")
    finally:
        mysql(url, f"UPDATE {table} SET plan = trim(trailing '+' from plan) WHERE user_id % 100 = 0")
    assert s3["rows_sent"] == n // 100, s3
    r = {"mysql_reference_s": ref, "mysql_first_s": t1, "mysql_second_s": t2, "mysql_third_s": t3,
         "mysql_rss_first_mb": rss1}
    if big:
        sandbox_get(base, "/_sandbox/reset", "POST")
        tb, rssb, sb = run_sync(config("mysql_big", f"sallyport_bench_people_{big}"), "people")
        assert sb["rows_sent"] == big, sb
        r.update(mysql_big_first_s=tb, mysql_rss_big_mb=rssb)
    print(f"\nMySQL reference: the mysql client's batch export of the people model to /dev/null: "
          f"{ref:.2f} s, median of 3\n")
    print("| case | time | × reference | target | met |")
    print("| --- | --- | --- | --- | --- |")
    for name, t, limit, target in [
        (f"MySQL: first sync of {n:,} people", t1, 5.0, "≤ 5 ×"),
        ("MySQL: second sync, nothing changed", t2, 1.5, "≤ 1.5 ×"),
        ("MySQL: third sync, 1 % of rows changed", t3, 2.0, "≤ 2 ×"),
    ]:
        print(f"| {name} | {t:.2f} s | {t / ref:.2f} × | {target} | {'yes' if t / ref <= limit else 'no'} |")
    print(f"| MySQL: peak memory at {n:,} rows | {rss1:.0f} MB | | ≤ 300 MB | {'yes' if rss1 <= 300 else 'no'} |")
    if big:
        ratio = r["mysql_rss_big_mb"] / rss1
        print(f"| MySQL: peak memory at {big:,} rows | {r['mysql_rss_big_mb']:.0f} MB ({ratio:.2f} × the figure at "
              f"{n:,}; first sync {r['mysql_big_first_s']:.1f} s) | | ≤ 1.5 × | {'yes' if ratio <= 1.5 else 'no'} |")
    return r


def bench_bigquery(a, base, work):
    """People from the BigQuery stand-in (crucible): peak memory and rows per second at two sizes.
    The stand-in is slow; the figures are about Sallyport's memory and overhead, not its speed."""
    endpoint, project = a.bigquery_endpoint, "sallyport-test"

    def post(path, body):
        req = urllib.request.Request(f"{endpoint}/bigquery/v2/projects/{project}{path}", method="POST",
                                     data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}")

    post("/datasets", {"datasetReference": {"projectId": project, "datasetId": "bench"}})
    out = {}
    print("\n| BigQuery stand-in (crucible) | rows | first sync | rows/s | nothing changed | peak memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (a.rows // 5, a.rows):
        table = f"bench.people_{n}"
        post("/queries", {"useLegacySql": False, "query": f"""CREATE OR REPLACE TABLE {table} AS
            SELECT x AS user_id, CONCAT('user', CAST(x AS STRING), '@example.com') AS email,
                   CONCAT('First', CAST(MOD(x, 1000) AS STRING)) AS first_name,
                   IF(MOD(x, 3) = 0, 'pro', 'free') AS plan,
                   TIMESTAMP_ADD(TIMESTAMP '2024-01-01 00:00:00+00', INTERVAL x MINUTE) AS signed_up_at,
                   MOD(x, 997) / 7.0 AS score, MOD(x, 2) = 0 AS active
            FROM UNNEST(GENERATE_ARRAY(1, {n})) AS x"""})
        path = os.path.join(work, f"bq_{n}.yaml")
        with open(path, "w") as f:
            f.write(f"""state: bq_{n}.db
warehouses:
  bq: {{type: bigquery, project: {project}, endpoint: "{endpoint}"}}
apps:
  cio:
    type: customerio
    site_id: sandbox-site
    api_key: sandbox-key
    track_url: {base}
    delivery: {{requests_per_second: {a.requests_per_second}, concurrency: 8}}
syncs:
  people: {{warehouse: bq, model: {{table: {table}}}, app: cio, object: person, mode: upsert, primary_key: user_id}}
""")
        sandbox_get(base, "/_sandbox/reset", "POST")
        t1, rss1, s1 = run_sync(path, "people")
        assert s1["rows_sent"] == n, s1
        t2, rss2, s2 = run_sync(path, "people")
        assert s2["rows_sent"] == 0, s2
        out[f"bigquery_{n}"] = {"first_s": t1, "second_s": t2, "rss_mb": max(rss1, rss2)}
        print(f"| | {n:,} | {t1:.1f} s | {n / t1:,.0f} | {t2:.1f} s | {max(rss1, rss2):.0f} MB |")
    return out


def bench_snowflake(a, base, work):
    """People from the Snowflake stand-in (fakesnow): peak memory and rows per second at two sizes.
    fakesnow answers a whole result inline (real Snowflake sends a small first part and then
    chunks), so the figure shows Sallyport holding one inline answer, not its chunked reading."""
    url = a.snowflake_url

    def call(path, body, token=None):
        headers = {"content-type": "application/json"}
        if token:
            headers["Authorization"] = f'Snowflake Token="{token}"'
        req = urllib.request.Request(url + path, method="POST", data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    token = call("/session/v1/login-request", {"data": {"ACCOUNT_NAME": "BENCH", "LOGIN_NAME": "u",
                                                         "PASSWORD": "p", "SESSION_PARAMETERS": {}}})["data"]["token"]
    for sql in ["CREATE DATABASE IF NOT EXISTS BENCH", "CREATE SCHEMA IF NOT EXISTS BENCH.PUBLIC"]:
        call("/queries/v1/query-request", {"sqlText": sql, "asyncExec": False, "sequenceId": 1}, token)
    out = {}
    print("\n| Snowflake stand-in (fakesnow) | rows | first sync | rows/s | nothing changed | peak memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (a.rows // 5, a.rows):
        table = f"PEOPLE_{n}"
        call("/queries/v1/query-request", {"asyncExec": False, "sequenceId": 1, "sqlText": f"""
            CREATE OR REPLACE TABLE BENCH.PUBLIC.{table} AS SELECT seq4() + 1 AS "user_id",
              'user' || (seq4() + 1) || '@example.com' AS "email", 'First' || mod(seq4(), 1000) AS "first_name",
              iff(mod(seq4(), 3) = 0, 'pro', 'free') AS "plan", mod(seq4(), 997) / 7.0 AS "score",
              mod(seq4(), 2) = 0 AS "active" FROM TABLE(GENERATOR(ROWCOUNT => {n}))"""}, token)
        path = os.path.join(work, f"sf_{n}.yaml")
        with open(path, "w") as f:
            f.write(f"""state: sf_{n}.db
warehouses:
  snow: {{type: snowflake, account: bench, user: u, password: p, warehouse: W, database: BENCH, schema: PUBLIC, url: "{url}"}}
apps:
  cio:
    type: customerio
    site_id: sandbox-site
    api_key: sandbox-key
    track_url: {base}
    delivery: {{requests_per_second: {a.requests_per_second}, concurrency: 8}}
syncs:
  people: {{warehouse: snow, model: {{table: {table}}}, app: cio, object: person, mode: upsert, primary_key: user_id}}
""")
        sandbox_get(base, "/_sandbox/reset", "POST")
        t1, rss1, s1 = run_sync(path, "people")
        assert s1["rows_sent"] == n, s1
        t2, rss2, s2 = run_sync(path, "people")
        assert s2["rows_sent"] == 0, s2
        out[f"snowflake_{n}"] = {"first_s": t1, "second_s": t2, "rss_mb": max(rss1, rss2)}
        print(f"| | {n:,} | {t1:.1f} s | {n / t1:,.0f} | {t2:.1f} s | {max(rss1, rss2):.0f} MB |")
    return out


class Proxy:
    """A TCP proxy in front of PostgreSQL that counts the bytes going each way and, when given a
    rate, paces both directions to it (a token bucket per direction shared by every connection):
    a warehouse across a network."""

    def __init__(self, target_port, mbit=None):
        self.target_port = target_port
        self.rate = mbit * 1_000_000 / 8 if mbit else None
        self.down = 0  # out of the warehouse
        self.up = 0
        self.free_at = {"down": 0.0, "up": 0.0}
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self.handle, "127.0.0.1", self.port))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait()

    async def pipe(self, reader, writer, way):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.rate:
                    now = self.loop.time()
                    start = max(now, self.free_at[way])
                    self.free_at[way] = start + len(data) / self.rate
                    if self.free_at[way] > now:
                        await asyncio.sleep(self.free_at[way] - now)
                if way == "down":
                    self.down += len(data)
                else:
                    self.up += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(self, client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self.pipe(client_r, server_w, "up"), self.pipe(server_r, client_w, "down"))

    def url(self, url):
        """`url` with its port replaced by the proxy's."""
        from urllib.parse import urlsplit, urlunsplit
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)
        user = host[0] + "@" if len(host) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def export_through(proxy, url, table):
    """psql's CSV export of the model through the proxy: (seconds, bytes out of the warehouse)."""
    before = proxy.down
    start = time.perf_counter()
    subprocess.run(
        ["psql", proxy.url(url), "-qc", f"\\copy (SELECT * FROM {SCHEMA}.{table}) TO '/dev/null' CSV"],
        check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, proxy.down - before


def bench_diff(a, base, work):
    """Change detection: local (the model read and compared here) against in the warehouse (a
    snapshot table there, only what changed read out), for each size, through the proxy
    unthrottled and at 100 Mbit/s."""
    url = a.database_url
    target_port = int(url.rsplit(":", 1)[1].split("/")[0]) if url.count(":") >= 2 else 5432
    snap_schema = "sallyport_bench_snapshots"
    out = {}
    for n in [int(x) for x in a.diff_rows.split(",")]:
        table = f"people_{n}"
        psql(url, f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        ensure_table(url, table, n, people_sql(table, n), a.rebuild)
        psql(url, f"DROP SCHEMA IF EXISTS {snap_schema} CASCADE")
        for net, mbit in [("unthrottled", None), ("100mbit", 100)]:
            if net not in a.diff_networks.split(","):
                continue
            proxy = Proxy(target_port, mbit)
            try:
                ref_s, ref_bytes = export_through(proxy, url, table)
                out[f"{n}/{net}/reference"] = {"s": ref_s, "bytes": ref_bytes}
                print(f"{n:,} rows, {net}: reference export {ref_s:.2f} s, {ref_bytes / 1e6:.1f} MB",
                      file=sys.stderr)
                for k, mode in enumerate(["local", "warehouse"]):
                    name = f"{mode}_{net}_{n}"
                    path = os.path.join(work, name + ".yaml")
                    with open(path, "w") as f:
                        f.write(f"""state: {name}.db
warehouses:
  pg: {{type: postgres, url: "{proxy.url(url)}", sallyport_schema: {snap_schema}}}
apps:
  cio:
    type: customerio
    site_id: sandbox-site
    api_key: sandbox-key
    track_url: {base}
    delivery: {{requests_per_second: {a.requests_per_second}, concurrency: 8}}
syncs:
  {name}: {{warehouse: pg, model: {{table: {SCHEMA}.{table}}}, app: cio, object: person, mode: upsert, primary_key: user_id, change_detection: {mode}}}
""")

                    def measure(case, expect_sent):
                        before = proxy.down
                        t, rss, summary = run_sync(path, name)
                        moved = proxy.down - before
                        assert summary["rows_sent"] == expect_sent, (case, summary)
                        out[f"{n}/{net}/{mode}/{case}"] = {"s": t, "bytes": moved, "rss_mb": rss}
                        print(f"  {mode:9} {case:10} {t:8.2f} s ({t / ref_s:5.2f} × export) "
                              f"{moved / 1e6:10.2f} MB ({moved / ref_bytes:6.4f} × export) {rss:.0f} MB RSS",
                              file=sys.stderr)

                    sandbox_get(base, "/_sandbox/reset", "POST")
                    measure("first", n)
                    measure("unchanged", 0)
                    marker = 10 + 2 * k + (0 if mbit is None else 1)
                    psql(url, f"UPDATE {SCHEMA}.{table} SET plan = plan || '+' WHERE user_id % 100 = {marker}")
                    try:
                        measure("1%", n // 100)
                    finally:
                        psql(url, f"UPDATE {SCHEMA}.{table} SET plan = rtrim(plan, '+') WHERE user_id % 100 = {marker}")
            finally:
                proxy.stop()
        psql(url, f"DROP SCHEMA IF EXISTS {snap_schema} CASCADE")
    print_diff(out, a)
    return {"diff": out}


def print_diff(out, a):
    """The tables of BENCHMARKS.md; a network not measured (--diff-networks) shows as —."""
    targets = {  # warehouse mode: (bytes vs export, time unthrottled, time at 100 Mbit/s)
        "unchanged": ("≤ 1 MB", 1.0, 0.2),
        "1%": ("≤ 1.2 × the changed rows' share", 1.2, 0.3),
        "first": ("≤ 1.1 × the export", 5.0, 1.5),
    }
    nets = ["unthrottled", "100mbit"]
    for n in [int(x) for x in a.diff_rows.split(",")]:
        ref = {net: out.get(f"{n}/{net}/reference") for net in nets}
        some = next(r for r in ref.values() if r)
        print(f"\n{n:,} rows: reference export {some['bytes'] / 1e6:.1f} MB, "
              + ", ".join(f"{r['s']:.2f} s {net}" for net, r in ref.items() if r) + "\n")
        print("| case | mode | bytes out of the warehouse | time, unthrottled | time, 100 Mbit/s | targets (warehouse mode) | met |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for case in ["unchanged", "1%", "first"]:
            for mode in ["local", "warehouse"]:
                runs = {net: out.get(f"{n}/{net}/{mode}/{case}") for net in nets}
                net0 = next(net for net in nets if runs[net])
                b = runs[net0]["bytes"]
                share = b / ref[net0]["bytes"]
                bytes_text = f"{b / 1e6:.2f} MB ({share:.4f} × export)"
                times = [f"{runs[net]['s']:.2f} s ({runs[net]['s'] / ref[net]['s']:.2f} ×)"
                         if runs[net] else "—" for net in nets]
                met = ""
                target_text = ""
                if mode == "warehouse":
                    limit_text, tu, tt = targets[case]
                    target_text = f"{limit_text}; ≤ {tu} ×; ≤ {tt} ×"
                    ok = (b <= 1e6 if case == "unchanged"
                          else share <= 1.2 * 0.01 if case == "1%" else share <= 1.1)
                    for net, limit in zip(nets, [tu, tt]):
                        if runs[net]:
                            ok = ok and runs[net]["s"] / ref[net]["s"] <= limit
                    met = "yes" if ok else "no"
                print(f"| {case} | {mode} | {bytes_text} | {times[0]} | {times[1]} | {target_text} | {met} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="people and events in the main cases")
    ap.add_argument("--big-rows", type=int, default=5_000_000, help="people in the memory case (0 skips it)")
    ap.add_argument("--database-url", default=os.environ.get(
        "SALLYPORT_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--requests-per-second", type=int, default=1000,
                    help="the app's delivery.requests_per_second (Customer.io documents up to 1,000)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the tables even if they exist")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    ap.add_argument("--warehouses", default="postgres,mysql",
                    help="which warehouses to measure, comma-separated (postgres, mysql, bigquery, snowflake)")
    ap.add_argument("--bigquery-endpoint", default=os.environ.get(
        "SALLYPORT_TEST_BIGQUERY_ENDPOINT", "http://127.0.0.1:9051"),
        help="the BigQuery stand-in (scripts/test.sh starts crucible there)")
    ap.add_argument("--snowflake-url", default=os.environ.get(
        "SALLYPORT_TEST_SNOWFLAKE_URL", "http://127.0.0.1:8089"),
        help="the Snowflake stand-in (scripts/test.sh starts fakesnow there)")
    ap.add_argument("--mysql-url", default=os.environ.get(
        "SALLYPORT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    ap.add_argument("--mysql-big-rows", type=int, default=3_000_000,
                    help="people in the MySQL memory case (0 skips it)")
    ap.add_argument("--diff-rows", default="10000000,1000000",
                    help="model sizes of the change detection cases (--warehouses diff)")
    ap.add_argument("--diff-networks", default="unthrottled,100mbit",
                    help="networks of the change detection cases: unthrottled, 100mbit or both")
    a = ap.parse_args()
    url = a.database_url
    n, big = a.rows, a.big_rows
    chosen = a.warehouses.split(",")
    do_pg, do_my, do_bq = "postgres" in chosen, "mysql" in chosen, "bigquery" in chosen
    do_sf = "snowflake" in chosen
    do_diff = "diff" in chosen

    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "sallyport"], cwd=ROOT, check=True)
    if do_pg:
        psql(url, f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        ensure_table(url, f"people_{n}", n, people_sql(f"people_{n}", n), a.rebuild)
        ensure_table(url, f"events_{n}", n, events_sql(f"events_{n}", n, n), a.rebuild)
        if big:
            ensure_table(url, f"people_{big}", big, people_sql(f"people_{big}", big), a.rebuild)

    port = free_port()
    sandbox = subprocess.Popen([BIN, "sandbox", "--listen", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            sandbox_get(base, "/_sandbox/stats")
            break
        except OSError:
            time.sleep(0.05)
    work = tempfile.mkdtemp(prefix="sallyport-bench-")
    results = {"rows": n, "big_rows": big}
    try:
        def config(name, table_people, table_events):
            path = os.path.join(work, name + ".yaml")
            with open(path, "w") as f:
                f.write(f"""state: {name}.db
warehouses:
  pg: {{type: postgres, url: "{url}"}}
apps:
  cio:
    type: customerio
    site_id: sandbox-site
    api_key: sandbox-key
    track_url: {base}
    delivery: {{requests_per_second: {a.requests_per_second}, concurrency: 8}}
syncs:
  people: {{warehouse: pg, model: {{table: {SCHEMA}.{table_people}}}, app: cio, object: person, mode: upsert, primary_key: user_id}}
  events:
    warehouse: pg
    model: {{table: {SCHEMA}.{table_events}}}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: event_id
    customer_id: user_id
    timestamp: happened_at
    event_name: event
""")
            return path

        if do_pg:
            main_cfg = config("main", f"people_{n}", f"events_{n}")
            ref = reference(url, f"people_{n}")
            ref_events = reference(url, f"events_{n}")
            results["reference_s"] = ref
            results["reference_events_s"] = ref_events

            sandbox_get(base, "/_sandbox/reset", "POST")
            sandbox_cpu = cpu_seconds(sandbox.pid)
            t1, rss1, s1 = run_sync(main_cfg, "people")
            results["first_sallyport_cpu_s"] = s1["cpu_s"]
            results["first_sandbox_cpu_s"] = cpu_seconds(sandbox.pid) - sandbox_cpu
            assert s1["rows_sent"] == n, s1
            t2, rss2, s2 = run_sync(main_cfg, "people")
            assert s2["rows_sent"] == 0, s2
            psql(url, f"UPDATE {SCHEMA}.people_{n} SET plan = plan || '+' WHERE user_id % 100 = 0")
            try:
                t3, rss3, s3 = run_sync(main_cfg, "people")
            finally:
                psql(url, f"UPDATE {SCHEMA}.people_{n} SET plan = rtrim(plan, '+') WHERE user_id % 100 = 0")
            assert s3["rows_sent"] == n // 100, s3
            te, rsse, se = run_sync(main_cfg, "events")
            assert se["rows_sent"] == n, se
            stats = sandbox_get(base, "/_sandbox/stats")
            results.update(first_s=t1, second_s=t2, third_s=t3, events_s=te,
                           rss_first_mb=rss1, rss_second_mb=rss2, rss_third_mb=rss3, rss_events_mb=rsse,
                           sandbox_people=stats["people"], sandbox_events=stats["events"])

            if big:
                big_cfg = config("big", f"people_{big}", f"events_{n}")
                sandbox_get(base, "/_sandbox/reset", "POST")
                tb, rssb, sb = run_sync(big_cfg, "people")
                assert sb["rows_sent"] == big, sb
                results.update(big_first_s=tb, rss_big_mb=rssb)
        if do_my:
            results.update(bench_mysql(a, base, work))
        if do_bq:
            results.update(bench_bigquery(a, base, work))
        if do_sf:
            results.update(bench_snowflake(a, base, work))
        if do_diff:
            results.update(bench_diff(a, base, work))
    finally:
        sandbox.terminate()
        sandbox.wait()
        shutil.rmtree(work, ignore_errors=True)

    if do_pg:
        rows = [
            (f"first sync of {n:,} people", results["first_s"], ref, "≤ 5 ×", 5.0),
            ("second sync, nothing changed", results["second_s"], ref, "≤ 1.5 ×", 1.5),
            ("third sync, 1 % of rows changed", results["third_s"], ref, "≤ 2 ×", 2.0),
            (f"{n:,} events, first sync", results["events_s"], ref, "≤ 5 ×", 5.0),
        ]
        print(f"\nreference: psql \\copy of the people model to /dev/null as CSV: {ref:.2f} s "
              f"(events model: {ref_events:.2f} s), median of 3\n")
        print(f"first sync: CPU seconds used by sallyport {results['first_sallyport_cpu_s']:.1f}, "
              f"by the sandbox {results['first_sandbox_cpu_s']:.1f} (2 cores)\n")
        print("| case | time | × reference | target | met |")
        print("| --- | --- | --- | --- | --- |")
        for name, t, r, target, limit in rows:
            ratio = t / r
            print(f"| {name} | {t:.2f} s | {ratio:.2f} × | {target} | {'yes' if ratio <= limit else 'no'} |")
        print(f"| peak memory of `sallyport sync` at {n:,} rows | {results['rss_first_mb']:.0f} MB | | ≤ 300 MB "
              f"| {'yes' if results['rss_first_mb'] <= 300 else 'no'} |")
        if big:
            ratio = results["rss_big_mb"] / results["rss_first_mb"]
            print(f"| peak memory at {big:,} rows | {results['rss_big_mb']:.0f} MB ({ratio:.2f} × the figure at "
                  f"{n:,}; first sync {results['big_first_s']:.1f} s) | | ≤ 1.5 × | {'yes' if ratio <= 1.5 else 'no'} |")
    os.makedirs(os.path.join(ROOT, "bench-out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-out", "bench.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
