#!/usr/bin/env bash
# Install the system parts the shop needs, only where missing: Docker engine,
# debootstrap (to build base images without a registry), RabbitMQ, a Consul binary and
# Prometheus (infra.prometheus; Debian's build, also copied into the shopctl/prometheus image)
# and PostgreSQL's server binaries (the saga log on PostgreSQL; its tests start a server),
# and Debian's docker-registry (its binary runs the lab's registry: `shopctl lab up --registry`).
# Idempotent: a second run on a prepared machine does no network work and takes ~0.1 s.
set -euo pipefail

SHOPCTL_TOOLS="${SHOPCTL_TOOLS:-/usr/local/bin}"
APT_UPDATED=""

log() { printf '[install-system] %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "installing system packages needs root; re-run with sudo: sudo $0 $*"
        exit 1
    fi
}

apt_update_once() {
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
}

apt_install() {
    # $@: packages; installs those whose status is not "installed".
    local missing=()
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        need_root
        apt_update_once
        log "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
    fi
}

install_consul() {
    # Debian 12 has no consul package; Debian 11 does (1.8.7). Fetch that .deb with a
    # private apt state so the system's sources are never touched, then unpack the binary.
    if command -v consul >/dev/null 2>&1; then
        return
    fi
    need_root
    local work
    work="$(mktemp -d)"
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    local mirror
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "deb [trusted=yes] $mirror bullseye main" >"$work/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
    log "fetching consul from Debian 11 (private apt state in $work)"
    apt-get "${opts[@]}" update -qq
    (cd "$work" && apt-get "${opts[@]}" download consul >/dev/null)
    dpkg -x "$work"/consul_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/consul" "$SHOPCTL_TOOLS/consul"
    rm -rf "$work"
    log "consul $("$SHOPCTL_TOOLS/consul" version | head -1)"
}

install_postgresql() {
    # The tests run initdb and pg_ctl themselves (tests/pgserver.py): only the binaries are
    # needed, on the PATH or in Debian's /usr/lib/postgresql/VERSION/bin.
    if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        return
    fi
    apt_install postgresql
}

main() {
    local what=("$@")
    [ "${#what[@]}" -gt 0 ] || what=(docker debootstrap rabbitmq consul prometheus postgresql docker-registry)
    for part in "${what[@]}"; do
        case "$part" in
            docker) apt_install docker.io ;;
            debootstrap) apt_install debootstrap ;;
            rabbitmq) apt_install rabbitmq-server ;;
            consul) install_consul ;;
            prometheus) apt_install prometheus ;;
            postgresql) install_postgresql ;;
            docker-registry) apt_install docker-registry ;;
            *) log "unknown part: $part (known: docker debootstrap rabbitmq consul prometheus postgresql docker-registry)"; exit 2 ;;
        esac
    done
}

main "$@"
