#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the labeler's tests, around one command:
#
#   scripts/pg_test_server.sh make test
#   scripts/pg_test_server.sh .venv/bin/python -m pytest tests/labeler
#
# initdb into a temporary folder, start postgres on 127.0.0.1 and a free port (socket in that folder too,
# so it never touches /var/run/postgresql), export LABELER_TEST_POSTGRES_URL, run the command, then stop
# the server and remove the folder whatever the command's outcome. The command's exit status is ours.
#
# postgres refuses to run as root: as root the cluster belongs to the `postgres` account (or `nobody`)
# through runuser. fsync is off: the data is thrown away, and the tests need speed, not durability.
# Without PostgreSQL's server binaries the command runs alone, with a note (the PG tests then skip),
# unless LABELER_REQUIRE_POSTGRES=1 (.ci/run): then that is an error. When LABELER_TEST_POSTGRES_URL is
# already set (.ci/run started a server and calls `make test`, which calls this again) the command runs
# against that server. It also exports LABELER_TEST_POSTGRES_RESTART, a command that crashes the server
# (immediate stop) and starts it again, for the crash tests.
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [ -n "${LABELER_TEST_POSTGRES_URL:-}" ]; then
    exec "$@"
fi

bindir=""
for dir in "${PG_BINDIR:-}" /usr/lib/postgresql/*/bin; do
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then bindir=$dir; fi
done
if [ -z "$bindir" ] && command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    bindir=$(dirname "$(command -v pg_ctl)")
fi
if [ -z "$bindir" ]; then
    if [ "${LABELER_REQUIRE_POSTGRES:-0}" = 1 ]; then
        echo "pg_test_server: no PostgreSQL server binaries (initdb, pg_ctl) found, and LABELER_REQUIRE_POSTGRES=1" >&2
        exit 1
    fi
    echo "pg_test_server: no PostgreSQL server binaries (initdb, pg_ctl) found: running without PostgreSQL" >&2
    exec "$@"
fi

as_owner=()
if [ "$(id -u)" = 0 ]; then
    owner=postgres
    getent passwd postgres >/dev/null || owner=nobody
    as_owner=(runuser -u "$owner" --)
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/labeler-pg.XXXXXX")
chmod 755 "$root"
[ ${#as_owner[@]} -eq 0 ] || chown "$owner" "$root"
data=$root/data
log=$root/server.log

stop() {
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$root"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${as_owner[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$root/initdb.log" 2>&1 ||
    { cat "$root/initdb.log" >&2; exit 1; }

# A free port: ask the kernel for one, then start on it; retry if another process took it meanwhile.
started=""
for attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    opts="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$root -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    if "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$log" -o "$opts" -w -t 30 start >/dev/null 2>&1; then
        started=1
        break
    fi
done
if [ -z "$started" ]; then
    echo "pg_test_server: postgres did not start:" >&2
    cat "$log" >&2 || true
    exit 1
fi

export LABELER_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
# A crash of the database server for the crash tests (scripts/bench_labeler.py, tests/labeler/test_crash.py):
# immediate mode is SIGQUIT to every backend (no checkpoint, crash recovery at the next start); pg_ctl restart
# starts it again with the options in postmaster.opts, on the same port.
restart=$root/restart.sh
printf '#!/usr/bin/env bash\nexec %s %q -D %q -l %q -m immediate -w -t 60 restart >/dev/null\n' \
    "${as_owner[*]}" "$bindir/pg_ctl" "$data" "$log" >"$restart"
chmod 755 "$restart"
export LABELER_TEST_POSTGRES_RESTART=$restart
echo "pg_test_server: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($root)" >&2
status=0
"$@" || status=$?
exit $status
