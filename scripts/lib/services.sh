# Shared by scripts/test and scripts/demo: make sure the local services of
# SPEC §7 and the Python venv are there. Sourced, not run.

log() { printf '==> %s\n' "$*" >&2; }

# One scripts/test or scripts/demo at a time on a machine: they share fixed
# names (the demo's vhost and database) and the ports of the private servers
# and clusters the tests start, so a second run waits instead of clobbering
# the first. Held until the process exits; a run started by one that holds
# it (the demo inside scripts/test) goes on.
# The lock is fd 9 of the script that holds it. Commands that start
# processes which may outlive a failing test run with `9>&-`, so a leaked
# process never holds the lock for the next run.
hold_machine_lock() {
    [ -n "${CELERITY_MACHINE_LOCK_HELD:-}" ] && return 0
    exec 9>"${TMPDIR:-/tmp}/celerity-services.lock"
    if ! flock -n 9; then
        log "another scripts/test or scripts/demo is running on this machine; waiting for it to end"
        flock 9
    fi
    export CELERITY_MACHINE_LOCK_HELD=1
}

# Debian packages the build and the tests need, installed only when missing.
ensure_packages() {
    local missing=()
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
    dpkg -s libmariadb-dev >/dev/null 2>&1 || missing+=(libmariadb-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    # The TLS tests make their certificates with the openssl command.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    # The Galera scenarios: the provider, its rsync state transfer, and the proxy.
    [ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
    command -v rsync >/dev/null 2>&1 || missing+=(rsync)
    command -v ss >/dev/null 2>&1 || missing+=(iproute2)
    # The nemesis partitions RabbitMQ nodes and cuts connections with iptables.
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# docker-compose (v1, from Debian) to validate docker-compose.yml; there is
# no Docker engine on the test machines, and `config` needs none.
ensure_compose_tool() {
    if ! command -v docker-compose >/dev/null 2>&1; then
        log "installing docker-compose"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq docker-compose >/dev/null
    fi
}

# Runs a command once a second until it succeeds, for up to a minute.
within_a_minute() {
    local i
    for i in $(seq 1 60); do
        "$@" && return 0
        sleep 1
    done
    return 1
}

mariadb_answers() { mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1; }

ensure_mariadb() {
    if ! mariadb_answers; then
        log "starting MariaDB"
        mkdir -p /run/mysqld && chown mysql:root /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    fi
    within_a_minute mariadb_answers || { log "MariaDB does not answer on 127.0.0.1:3306"; return 1; }
}

rabbitmq_answers() { timeout 20 rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; }

ensure_rabbitmq() {
    if ! rabbitmq_answers; then
        log "starting RabbitMQ"
        rabbitmq-server -detached >/dev/null 2>&1 || true
        timeout 120 rabbitmqctl await_startup >/dev/null
    fi
    within_a_minute rabbitmq_answers || { log "RabbitMQ does not answer on 127.0.0.1:5672"; return 1; }
    # The management API on 15672: the unacknowledged counts on /metrics come from it.
    ensure_rabbitmq_plugin rabbitmq_management management_answers "management API on 127.0.0.1:15672" || return 1
    # The Prometheus endpoint on 15692: W2 reads the broker's global message
    # counters (received, routed, dead-lettered) from it.
    ensure_rabbitmq_plugin rabbitmq_prometheus prometheus_answers "Prometheus endpoint on 127.0.0.1:15692"
}

management_answers() { curl -sf -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview; }
prometheus_answers() { curl -sf -o /dev/null http://127.0.0.1:15692/metrics; }

# ensure_rabbitmq_plugin PLUGIN CHECK WHAT: enables PLUGIN unless CHECK
# passes already, then waits for CHECK.
ensure_rabbitmq_plugin() {
    "$2" && return 0
    log "enabling RabbitMQ's $3"
    rabbitmq-plugins enable -q "$1" >/dev/null
    within_a_minute "$2" || { log "RabbitMQ's $3 does not answer"; return 1; }
}

# The venv with real Celery, rebuilt only when the requirements change.
# With a third argument PYDANTIC ("pydantic<2" or "pydantic>=2"), it also
# gets the real bk-plugin-framework 2.3.15 (--no-deps) and what its runtime
# needs (tests/python/framework-requirements.txt), for the Python plugin tests.
ensure_venv() {
    local venv="$1" requirements="$2" pydantic="${3:-}"
    local stamp="$venv/.requirements.sha256"
    local framework=tests/python/framework-requirements.txt
    local want
    want=$( (cat "$requirements"; [ -n "$pydantic" ] && cat "$framework" && echo "$pydantic") | sha256sum | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "preparing Python venv $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    if [ -n "$pydantic" ]; then
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$framework" "$pydantic"
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps bk-plugin-framework==2.3.15
    fi
    echo "$want" > "$stamp"
}

# The project's venv (.venv): real Celery, and the real framework with
# pydantic v2. Every script uses this one, so none rebuilds it for another.
ensure_project_venv() {
    ensure_venv "$PWD/.venv" tests/python/requirements.txt "pydantic>=2,<3"
}
