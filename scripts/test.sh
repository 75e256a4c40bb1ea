#!/usr/bin/env bash
# Runs every test of every module of this repository: the core library, the
# storetest conformance suite on every store, the Postgres and Redis adapters
# against real servers, the demo service, and the demo's browser app in a
# real headless Chromium.
#
# Servers: PG_DSN and REDIS_URL point the tests at servers you already run.
# Otherwise this script starts a throw-away postgresql and redis-server on
# free loopback ports in a temporary directory (installing Debian's packages
# with apt-get when they are missing and it runs as root) and stops them
# afterwards. Without root and without the servers the adapter tests are
# skipped with a message; with CI=true a missing server fails the run.
# A three-node Redis Cluster is started too (REDIS_CLUSTER_ADDRS=host:port,…
# names an existing one), so that redisstore is tested on Cluster as well,
# and a PgBouncer in transaction pooling mode in front of the Postgres
# (PGBOUNCER_DSN names an existing one), for pgstore behind a pooler.
# Chromium: Debian's chromium is installed the same way when missing
# (CHROMIUM=/path/to/chrome names another); without it the browser tests
# are skipped with a message, and with CI=true they fail. Node.js and npm
# likewise, for the JavaScript client tests (oauth4webapi, jose).
#
# Extra arguments are passed to every `go test`, e.g. scripts/test.sh -run Rotate.
# GO_TEST_FLAGS replaces the default "-race -count=1" (say, for benchmarks:
# GO_TEST_FLAGS=-count=1 scripts/test.sh -run '^$' -bench . ).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# Debian installs pgbouncer in /usr/sbin, which is not on a non-root
# user's PATH: without this it was skipped for them although installed.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac
# Published modules build in the workspace (go.work), which resolves their
# requirements on each other to this tree; bench, releasetest and
# browsertest are not published and build on their own (GOWORK=off, bench
# and browsertest with a replace; browsertest builds the demo in the
# workspace).
MODULES=(. pgstore redisstore sqlitestore cmd/refresh-demo releasetest bench browsertest)
gowork() { case $1 in bench|releasetest|browsertest) shift; GOWORK=off "$@" ;; *) shift; "$@" ;; esac; }
read -r -a FLAGS <<<"${GO_TEST_FLAGS:--race -count=1}"
# -trimpath for every build: releasetest builds its consumer with it, from
# module caches of its own, and the demo's tests build the demo; with it
# here too, each dependency compiles once for all of them (on an empty
# build cache, SQLite alone is a minute).
case " $(go env GOFLAGS) " in *" -trimpath "*) ;; *) export GOFLAGS="$(go env GOFLAGS) -trimpath" ;; esac
CI=${CI:-false}
# The tests run in a zone far from UTC with an odd offset (+12:45, +13:45 in
# summer) unless TZ is set, so that no code or test passes by taking the
# local zone for UTC (a demo test did, until the Issuer read its clock in UTC).
export TZ=${TZ:-Pacific/Chatham}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/refresh-test.XXXXXX")
chmod 755 "$TMP"
STOPS=()
cleanup() {
  local s
  for s in "${STOPS[@]+"${STOPS[@]}"}"; do eval "$s" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

is_root() { [ "$(id -u)" = 0 ]; }

# Ports come from 10000-21999, below Linux's ephemeral range (32768+, where
# the tests' own outgoing connections live), and so do the Redis Cluster
# bus ports (port + 10000).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((10000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free loopback port found"
}

APT_UPDATED=0
apt_install() {
  is_root || return 1
  command -v apt-get >/dev/null || return 1
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v pg_ctl >/dev/null && command -v initdb >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
  return 1
}

missing() { # what, how-to
  if [ "$CI" = true ]; then die "$1 is not available and CI=true: a missing server is a failure ($2)"; fi
  say "SKIPPING the $1 tests: $2"
}

start_postgres() {
  if [ -n "${PG_DSN:-}" ]; then say "Postgres: using PG_DSN"; return 0; fi
  local bin
  if ! bin=$(pg_bindir); then
    apt_install postgresql || true
    bin=$(pg_bindir) || { missing Postgres "install postgresql, run this script as root, or set PG_DSN=postgres://…"; return 0; }
  fi
  local port dir user=""
  port=$(free_port)
  dir=$TMP/pg
  mkdir -p "$dir/data" "$dir/sock"
  if is_root; then
    # postgres refuses to run as root: run it as the postgres system user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown -R postgres "$dir"
    user=postgres
  fi
  as_pg() { if [ -n "$user" ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  local opts="-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  local try
  for try in 1 2 3; do
    as_pg "$bin/pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/server.log" -w -t 60 start >/dev/null && break
    [ $try = 3 ] && { cat "$dir/server.log" >&2; die "postgres did not start"; }
    say "postgres did not start on port $port (attempt $try); trying another port"
    port=$(free_port)
    opts="-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  done
  local pfx=""
  [ -n "$user" ] && pfx="runuser -u $user -- "
  export PG_STOP_CMD="${pfx}$bin/pg_ctl -D $dir/data -m fast -w stop"
  export PG_START_CMD="${pfx}$bin/pg_ctl -D $dir/data -o '$opts' -l $dir/server.log -w -t 60 start"
  STOPS+=("$PG_STOP_CMD")
  export PG_DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  PG_PORT=$port PG_USER=$user
  say "Postgres $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# PgBouncer in transaction pooling mode in front of the Postgres started
# above, as production deployments often run one: pgstore's conformance
# suite runs through it too (PGBOUNCER_DSN names an existing one).
start_pgbouncer() {
  if [ -n "${PGBOUNCER_DSN:-}" ]; then say "PgBouncer: using PGBOUNCER_DSN"; return 0; fi
  if [ -z "${PG_PORT:-}" ]; then
    [ -n "${PG_DSN:-}" ] && say "SKIPPING the PgBouncer tests: PG_DSN names your Postgres; set PGBOUNCER_DSN=postgres://… to run them through your PgBouncer"
    return 0
  fi
  if ! command -v pgbouncer >/dev/null; then
    apt_install pgbouncer || true
    command -v pgbouncer >/dev/null || { missing PgBouncer "install pgbouncer, run this script as root, or set PGBOUNCER_DSN=postgres://…"; return 0; }
  fi
  local port dir=$TMP/pgbouncer
  port=$(free_port)
  mkdir -p "$dir"
  printf '"postgres" ""\n' >"$dir/users.txt"
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  # pgbouncer refuses to run as root: as the user Postgres runs as.
  local pfx=""
  if [ -n "${PG_USER:-}" ]; then chown -R "$PG_USER" "$dir"; pfx="runuser -u $PG_USER --"; fi
  $pfx pgbouncer -d -q "$dir/pgbouncer.ini" || { cat "$dir/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer did not start"; }
  for _ in $(seq 1 100); do [ -s "$dir/pgbouncer.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  STOPS+=("kill \$(cat $dir/pgbouncer.pid)")
  export PGBOUNCER_DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  say "PgBouncer $(pgbouncer --version | awk 'NR==1{print $2}') (transaction pooling) on 127.0.0.1:$port"
}

start_redis() {
  if [ -n "${REDIS_URL:-}" ]; then say "Redis: using REDIS_URL"; export REDIS_URL_GIVEN=1; return 0; fi
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server || true
    command -v redis-server >/dev/null || { missing Redis "install redis-server, run this script as root, or set REDIS_URL=redis://…"; return 0; }
  fi
  local port dir
  port=$(free_port)
  dir=$TMP/redis
  mkdir -p "$dir"
  local args="--port $port --bind 127.0.0.1 --dir $dir --save '' --appendonly yes --appendfsync everysec --daemonize yes --pidfile $dir/redis.pid --logfile $dir/redis.log"
  eval redis-server "$args" || die "redis-server did not start"
  for _ in $(seq 1 100); do [ -s "$dir/redis.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  export REDIS_STOP_CMD="kill \$(cat $dir/redis.pid); for i in \$(seq 1 100); do [ -e $dir/redis.pid ] || break; sleep 0.05; done"
  export REDIS_START_CMD="redis-server $args; for i in \$(seq 1 100); do [ -s $dir/redis.pid ] && break; sleep 0.05; done"
  STOPS+=("$REDIS_STOP_CMD")
  export REDIS_URL="redis://127.0.0.1:$port/0"
  say "Redis $(redis-server --version | awk '{print $3}' | tr -d 'v=') on 127.0.0.1:$port"
}

# The demo's walkthrough test runs the README's curl commands for real.
for tool in curl jq; do
  command -v $tool >/dev/null || apt_install $tool || missing "README walkthrough" "install $tool"
done
# A three-node Redis Cluster on loopback, for the cluster test of redisstore.
start_redis_cluster() {
  if [ -n "${REDIS_CLUSTER_ADDRS:-}" ]; then say "Redis Cluster: using REDIS_CLUSTER_ADDRS"; return 0; fi
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { missing "Redis Cluster" "install redis-server (and redis-tools)"; return 0; }
  local try
  for try in 1 2 3; do
    try_redis_cluster "$try" && return 0
    [ $try = 3 ] && { cat "$TMP/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
    say "Redis Cluster did not form (attempt $try); trying other ports"
  done
}

try_redis_cluster() {
  local addrs=() port dir i
  for i in 1 2 3; do
    for _ in $(seq 1 50); do
      port=$(free_port)
      # the cluster bus listens on port+10000
      (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null || break
    done
    dir=$TMP/rc$1-$i
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 5000 \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" || die "cluster node did not start"
    STOPS+=("kill \$(cat $dir/redis.pid)")
    addrs+=("127.0.0.1:$port")
  done
  for a in "${addrs[@]}"; do
    for _ in $(seq 1 100); do redis-cli -u "redis://$a" ping >/dev/null 2>&1 && break; sleep 0.05; done
  done
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$TMP/cluster-create.log" 2>&1; then
    for i in 1 2 3; do kill "$(cat "$TMP/rc$1-$i/redis.pid")" 2>/dev/null || true; done
    return 1
  fi
  for _ in $(seq 1 200); do
    redis-cli -u "redis://${addrs[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
    sleep 0.05
  done
  export REDIS_CLUSTER_ADDRS
  REDIS_CLUSTER_ADDRS=$(IFS=,; echo "${addrs[*]}")
  say "Redis Cluster of 3 masters on $REDIS_CLUSTER_ADDRS"
}

# Debian's Chromium for the browser tests (browsertest).
start_chromium() {
  if [ -n "${CHROMIUM:-}" ]; then say "Chromium: using CHROMIUM=$CHROMIUM"; return 0; fi
  local b
  for b in chromium chromium-browser google-chrome; do
    command -v $b >/dev/null && { say "Chromium: $($b --version 2>/dev/null | head -1)"; return 0; }
  done
  # fonts-liberation: readable text in the screenshot the test writes.
  apt_install chromium fonts-liberation || true
  command -v chromium >/dev/null || { missing "browser" "install Debian's chromium, run this script as root, or set CHROMIUM=/path/to/chrome"; return 0; }
  say "Chromium: $(chromium --version 2>/dev/null | head -1)"
}

# Node.js 20+ and npm run standard JavaScript OAuth/JOSE clients against the
# demo (browsertest/js, packages from the npm registry). Debian's nodejs and
# npm are installed when missing, but bookworm's nodejs is 18, too old for
# jose 6; then a pinned Node.js build is fetched from the npm registry
# (package node-linux-<arch>, the binary only; npm checks its integrity),
# kept in ~/.cache/refreshkit and put first on PATH. Neither needs root.
NODE_VERSION=24.22.3
node_major() { node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
start_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm || true
  fi
  command -v node >/dev/null && command -v npm >/dev/null || { missing "JavaScript client" "install Node.js 20+ with npm, or run this script as root"; return 0; }
  if [ "$(node_major)" -lt 20 ] 2>/dev/null || [ -z "$(node_major)" ]; then
    local arch dir
    case $(uname -m) in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
    dir="${XDG_CACHE_HOME:-${HOME:-$TMP}/.cache}/refreshkit/node-$NODE_VERSION-linux-$arch"
    mkdir -p "$(dirname "$dir")" 2>/dev/null && [ -w "$(dirname "$dir")" ] || dir="$TMP/node-$NODE_VERSION-linux-$arch" # no cache: this run only
    if [ ! -x "$dir/bin/node" ]; then
      say "Node.js $(node --version) is too old: fetching node-linux-$arch@$NODE_VERSION from the npm registry"
      mkdir -p "$TMP/node"
      if (cd "$TMP/node" && npm pack --silent "node-linux-$arch@$NODE_VERSION" >/dev/null 2>&1) &&
         tar -xzf "$TMP/node/node-linux-$arch-$NODE_VERSION.tgz" -C "$TMP/node" &&
         "$TMP/node/package/bin/node" --version >/dev/null 2>&1; then
        rm -rf "$dir" && mv "$TMP/node/package" "$dir"
      else
        missing "JavaScript client" "Node.js $(node --version) is too old and node-linux-$arch@$NODE_VERSION could not be fetched from the npm registry: install Node.js 20+"
        return 0
      fi
    fi
    export PATH="$dir/bin:$PATH"
  fi
  say "Node.js: $(node --version), npm $(npm --version)"
}

start_postgres
start_pgbouncer
start_redis
start_chromium
start_node
[ -n "${REDIS_URL_GIVEN:-}" ] || start_redis_cluster

# The modules run in two lanes side by side: most of the tests in the
# second wait on a server, a browser or a child process, so on two cores
# the lanes together take little more than half of one after the other
# (165 s against 285 s of modules on a 2-vCPU machine). Each
# module's output is printed whole when it ends. TEST_LANES=1 runs them one
# after the other with the output as it comes (and so does a benchmark
# run, so that nothing else shares the machine while it measures; the
# -benchtime=1x smoke run of .ci/run is not one). releasetest is in the
# second lane since a run on empty caches measured the first at 304 s and
# the second at 203 s, with it in the first (warm: 221 s and 164 s).
LANES=(". sqlitestore cmd/refresh-demo" "pgstore redisstore releasetest browsertest bench")
for m in "${MODULES[@]}"; do
  n=0
  for l in "${LANES[@]}"; do for x in $l; do [ "$x" = "$m" ] && n=$((n + 1)); done; done
  [ $n = 1 ] || die "module $m is in $n lanes of scripts/test.sh, not one"
done
[ "$(echo ${LANES[*]} | wc -w)" = ${#MODULES[@]} ] || die "the lanes of scripts/test.sh name a module that is not in MODULES"
lanes=${TEST_LANES:-2}
measuring=false
for a in "$@"; do case $a in -bench|-bench=*|-test.bench|-test.bench=*) measuring=true ;; esac; done
for a in "$@"; do case $a in -benchtime=1x|-test.benchtime=1x) measuring=false ;; esac; done
[ "$measuring" = true ] && lanes=1
command -v flock >/dev/null || lanes=1 # util-linux: prints one module at a time

test_module() { (cd "$ROOT/$1" && gowork "$1" go test "${FLAGS[@]}" "${@:2}" ./...); }
run_module() { # module, then the go test arguments
  local m=$1 out rc=0 start=$SECONDS
  if [ "$lanes" = 1 ]; then
    say "go test ${FLAGS[*]} ${*:2} ($m)"
    test_module "$@"
    return
  fi
  out=$TMP/out.${m//\//_}
  test_module "$@" >"$out" 2>&1 || rc=1
  {
    flock 9
    say "go test ${FLAGS[*]} ${*:2} ($m): $([ $rc = 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
    cat "$out"
  } 9>"$TMP/print.lock"
  return $rc
}

status=0
if [ "$lanes" = 1 ]; then
  for m in "${MODULES[@]}"; do run_module "$m" "$@" || status=1; done
else
  say "go test ${FLAGS[*]} $* in two lanes: ${LANES[0]} | ${LANES[1]} (TEST_LANES=1: one module at a time)"
  pids=()
  for l in "${LANES[@]}"; do
    (st=0; for m in $l; do run_module "$m" "$@" || st=1; done; exit $st) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
fi
[ $status = 0 ] && say "all modules passed" || say "some tests FAILED"
exit $status
