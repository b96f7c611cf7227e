#!/usr/bin/env bash
# Start the Docker engine and a RabbitMQ broker when they do not answer yet.
# Nothing here is a system service on these machines (no systemd), so we start the
# daemons ourselves, detached, logging under ${SHOPCTL_ENGINE_LOGS:-/var/log/shopctl}.
set -euo pipefail
LOGS="${SHOPCTL_ENGINE_LOGS:-/var/log/shopctl}"
mkdir -p "$LOGS"
log() { printf '[start-engines] %s\n' "$*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$what did not come up within ${limit}s; see $LOGS"
            return 1
        fi
        sleep 0.5
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_docker() {
    if docker info >/dev/null 2>&1; then return; fi
    command -v dockerd >/dev/null || { log "dockerd missing: run scripts/install-system.sh docker"; exit 1; }
    log "starting dockerd (log: $LOGS/dockerd.log)"
    setsid dockerd >"$LOGS/dockerd.log" 2>&1 < /dev/null &
    wait_for 60 "dockerd" docker info
}

start_rabbitmq() {
    if port_open 5672; then return; fi
    command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] \
        || { log "rabbitmq-server missing: run scripts/install-system.sh rabbitmq"; exit 1; }
    log "starting rabbitmq-server (log: $LOGS/rabbitmq.log)"
    setsid /usr/sbin/rabbitmq-server >"$LOGS/rabbitmq.log" 2>&1 < /dev/null &
    wait_for 90 "rabbitmq" port_open 5672
}

what=("$@")
[ "${#what[@]}" -gt 0 ] || what=(docker rabbitmq)
for part in "${what[@]}"; do
    case "$part" in
        docker) start_docker ;;
        rabbitmq) start_rabbitmq ;;
        *) log "unknown engine: $part"; exit 2 ;;
    esac
done
