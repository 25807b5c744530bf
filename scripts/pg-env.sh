# Sourced by the dev scripts: finds the PostgreSQL server binaries and runs them as a user the
# server accepts (as root, the `postgres` user; otherwise the caller).

pg_bindir() {
  local found
  found=$(command -v pg_ctl 2>/dev/null || true)
  if [ -n "$found" ]; then
    dirname "$(readlink -f "$found")"
    return
  fi
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$found" ]; then
    echo "PostgreSQL is not installed: run 'make deps' (or 'make test', which runs it)" >&2
    return 1
  fi
  echo "$found"
}

# Runs from / so that the server user need not be able to enter the checkout; every path
# handed to it must be absolute.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Gives the server user a file or directory (a no-op unless running as root).
give_pg() {
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$@"
  fi
}

random_hex() {
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}
