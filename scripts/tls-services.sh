# Sourced by scripts/test.sh: the servers the TLS and MySQL tests connect to, brought up when they
# are not running, each in a throwaway folder under $TMPDIR (kept between runs, so the second run
# starts them in a second):
#   - a certificate chain made with openssl: a CA, a server certificate for `localhost` only (so
#     that 127.0.0.1 is a wrong name), a client certificate for the user `certuser`, and an
#     unrelated CA;
#   - PostgreSQL with ssl=on on 5433 (plain connections refused; `certuser` must show its
#     client certificate), and PostgreSQL with ssl=off on 5434;
#   - MariaDB on 127.0.0.1:3306 when none answers there, and MariaDB with TLS required on 3307.
# Needs the helpers of test.sh: say, die, find_bin.

tls_root="${TMPDIR:-/tmp}/sallyport-test-tls"
export SALLYPORT_TEST_TLS_CERTS="$tls_root/certs"
export SALLYPORT_TEST_PGTLS_URL="postgres://postgres@localhost:5433/postgres"
export SALLYPORT_TEST_PGPLAIN_URL="postgres://postgres@127.0.0.1:5434/postgres"

make_certs() {
  local d="$SALLYPORT_TEST_TLS_CERTS"
  [ -s "$d/client.crt" ] && grep -q clientAuth "$d/client.ext" 2>/dev/null && return 0
  command -v openssl >/dev/null 2>&1 || die "the TLS tests need openssl to make their certificates: install it (apt-get install openssl)"
  rm -rf "$d"; mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Sallyport Test CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Unrelated CA" \
      -keyout other-ca.key -out other-ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=certuser" -keyout client.key -out client.csr 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.crt 2>/dev/null
    chmod 600 ./*.key
  ) || die "openssl could not make the test certificates"
}

pg_answers_on() { # port
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p "$1" -t 2
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

pg_cluster() { # name port ssl(on|off)
  local name=$1 port=$2 ssl=$3 initdb pg_ctl data runas=()
  initdb=$(find_bin initdb); pg_ctl=$(find_bin pg_ctl)
  [ -n "$initdb" ] && [ -n "$pg_ctl" ] || die "cannot start the $name PostgreSQL: no initdb/pg_ctl installed"
  data="$tls_root/$name"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runas=(runuser -u postgres --)
  fi
  # A cluster made with older certificates is made again.
  if [ "$ssl" = on ] && [ -s "$data/PG_VERSION" ] && ! cmp -s "$data/ca.crt" "$SALLYPORT_TEST_TLS_CERTS/ca.crt"; then
    "${runas[@]}" "$pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$data"
  fi
  if pg_answers_on "$port"; then
    [ -s "$data/postmaster.pid" ] || die "port $port is taken by a server this script did not start: free it for the $name PostgreSQL the tests need"
    return 0
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    rm -rf "$data"; mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres "$data"
    "${runas[@]}" "$initdb" -D "$data" -U postgres --auth=trust >/dev/null
    if [ "$ssl" = on ]; then
      cp "$SALLYPORT_TEST_TLS_CERTS/server.crt" "$SALLYPORT_TEST_TLS_CERTS/server.key" \
        "$SALLYPORT_TEST_TLS_CERTS/ca.crt" "$data/"
      chmod 600 "$data/server.key"
      [ "$(id -u)" = 0 ] && chown postgres "$data/server.crt" "$data/server.key" "$data/ca.crt"
      cat >>"$data/postgresql.conf" <<EOF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.crt'
EOF
      cat >"$data/pg_hba.conf" <<EOF
local all all trust
hostssl all certuser 127.0.0.1/32 cert
hostssl all certuser ::1/128 cert
hostssl all all 127.0.0.1/32 trust
hostssl all all ::1/128 trust
hostnossl all all 0.0.0.0/0 reject
hostnossl all all ::/0 reject
EOF
    else
      printf 'ssl = off\n' >>"$data/postgresql.conf"
    fi
  fi
  touch "$data.log"; [ "$(id -u)" = 0 ] && chown postgres "$data.log"
  say "starting the $name PostgreSQL on port $port"
  "${runas[@]}" "$pg_ctl" -D "$data" -l "$data.log" -w -t 60 \
    -o "-h localhost -p $port -k $data" start >/dev/null \
    || { tail -n 5 "$data.log" >&2; die "the $name PostgreSQL did not start on port $port (is the port taken?)"; }
  if [ "$ssl" = on ]; then
    psql -h "$data" -p "$port" -U postgres -d postgres -qc "CREATE ROLE certuser LOGIN SUPERUSER" >/dev/null 2>&1 || true
  fi
}

# An RSA key in PKCS#8 (a service account's, for the OAuth test) and its public half (PKCS#1 DER).
make_sa_key() {
  local d="$SALLYPORT_TEST_TLS_CERTS"
  [ -s "$d/sa.aes.p8" ] && return 0
  # The same key encrypted as Snowflake's guide makes it (-v2 des3) and with AES, passphrase
  # `sallyport-test`.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/sa.key" 2>/dev/null \
    && openssl rsa -in "$d/sa.key" -RSAPublicKey_out -outform DER -out "$d/sa.pub.der" 2>/dev/null \
    && openssl pkcs8 -topk8 -v2 des3 -in "$d/sa.key" -out "$d/sa.des3.p8" -passout pass:sallyport-test 2>/dev/null \
    && openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$d/sa.key" -out "$d/sa.aes.p8" -passout pass:sallyport-test 2>/dev/null \
    || die "openssl could not make the test's RSA key"
}

mkdir -p "$tls_root"
[ "$(id -u)" = 0 ] && chmod 755 "$tls_root"
make_certs
make_sa_key
pg_cluster pgtls 5433 on
pg_cluster pgplain 5434 off

# MariaDB: the shared one on 3306 when it answers, otherwise one started from the installed
# binaries (or Debian's mariadb-server, installed when run as root); and one on 3307 that
# requires TLS, with the server certificate above.
export SALLYPORT_TEST_MYSQL_URL="${SALLYPORT_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
export SALLYPORT_TEST_MYSQLTLS_URL="mysql://app:app-pw@localhost:3307/test"

mysql_answers_on() { # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

mariadb_bins() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing MariaDB from Debian's packages"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null && apt-get install -y -qq mariadb-server >/dev/null \
        || die "cannot install mariadb-server with apt-get"
      # The package may start its own server on 3306; the tests use it if it answers.
    else
      die "the MySQL tests need MariaDB: install mariadb-server (apt-get install mariadb-server) or point SALLYPORT_TEST_MYSQL_URL at a server"
    fi
  fi
  MARIADBD=$(command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd)
}

mariadb_start() { # name port extra-args...
  local name=$1 port=$2 data; shift 2
  data="$tls_root/$name"
  mariadb_bins
  if [ ! -d "$data/mysql" ]; then
    rm -rf "$data"; mkdir -p "$data"
    mariadb-install-db --no-defaults --datadir="$data" --user="$(id -un)" \
      --auth-root-authentication-method=normal >/dev/null 2>&1 \
      || die "mariadb-install-db could not make $data"
  fi
  say "starting the $name MariaDB on port $port"
  nohup "$MARIADBD" --no-defaults --user="$(id -un)" --datadir="$data" --port="$port" \
    --bind-address=127.0.0.1 --socket="$data.sock" --pid-file="$data.pid" --skip-log-bin "$@" \
    >"$data.log" 2>&1 &
  for _ in $(seq 1 60); do
    mariadb -S "$data.sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  tail -n 5 "$data.log" >&2
  die "the $name MariaDB did not start on port $port"
}

if ! mysql_answers_on 3306 && [ "$SALLYPORT_TEST_MYSQL_URL" = "mysql://root@127.0.0.1:3306/test" ]; then
  mariadb_start mariadb 3306
fi
if [ "$SALLYPORT_TEST_MYSQL_URL" = "mysql://root@127.0.0.1:3306/test" ]; then
  mariadb -h127.0.0.1 -P3306 -uroot -e "CREATE DATABASE IF NOT EXISTS test" \
    || die "cannot reach MariaDB as root at 127.0.0.1:3306"
fi
if ! mysql_answers_on 3307; then
  mariadb_start mariadbtls 3307 --ssl-cert="$SALLYPORT_TEST_TLS_CERTS/server.crt" \
    --ssl-key="$SALLYPORT_TEST_TLS_CERTS/server.key" --ssl-ca="$SALLYPORT_TEST_TLS_CERTS/ca.crt" \
    --require-secure-transport=ON
  mariadb -S "$tls_root/mariadbtls.sock" -uroot -e "CREATE DATABASE IF NOT EXISTS test;
    CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw';
    GRANT ALL ON *.* TO 'app'@'127.0.0.1';
    CREATE USER IF NOT EXISTS 'certuser'@'127.0.0.1' REQUIRE SUBJECT '/CN=certuser';
    GRANT ALL ON *.* TO 'certuser'@'127.0.0.1';" || die "cannot set up the TLS MariaDB"
fi
