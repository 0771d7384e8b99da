#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages), then runs the whole
# suite. `.ci/run` calls exactly this. Run without the right to install packages, it says what to
# install and stops before running anything, rather than failing halfway.
#
# Usage: ./test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")"

# What the tests run for real, by the command each package provides.
#   tinyproxy: the vault's and the binary's proxy tests talk through a real one.
#   postgresql (initdb): the vault's PostgreSQL tests start a real cluster (regent-testkit's
#     postgres.rs). Debian keeps initdb off PATH, so it is looked for where the test kit looks.
needed=(tinyproxy:tinyproxy initdb:postgresql)

# Whether a command is installed: on PATH or in /usr/sbin; PostgreSQL's server programs in
# `pg_config --bindir` or /usr/lib/postgresql/VERSION/bin (never PATH: a link there that a fresh
# machine lacks must not hide a missing package).
installed() {
    local command_name=$1
    if [ "$command_name" = initdb ]; then
        local bindir
        if bindir=$(pg_config --bindir 2>/dev/null) && [ -x "$bindir/initdb" ]; then
            return 0
        fi
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
        return
    fi
    command -v "$command_name" >/dev/null 2>&1 || [ -x "/usr/sbin/$command_name" ]
}

missing=()
for entry in "${needed[@]}"; do
    command_name=${entry%%:*}
    package=${entry#*:}
    if ! installed "$command_name"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${missing[*]} (Debian packages the tests need)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "test.sh: the tests need these Debian packages, which are not installed: ${missing[*]}" >&2
        echo "test.sh: install them (as root: apt-get install -y ${missing[*]}), then run ./test.sh again" >&2
        exit 1
    fi
fi

exec cargo test --workspace --locked "$@"
