# Sourced by the measurement scripts that run PgBouncer beside pgvalet (bench.sh, load.sh):
# installs it when missing, and writes and starts the one setup they compare against.

# Installs PgBouncer from the distribution if it is not on the machine.
pgbouncer_install() {
  command -v pgbouncer >/dev/null 2>&1 && return
  local sudo=
  [ "$(id -u)" != 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
}

# pgbouncer_start DIR LISTEN_PORT PG_PORT DATABASE USER PASSWORD POOL_SIZE MAX_CLIENTS
# Starts PgBouncer as the server user with DIR/pgbouncer.ini: transaction pooling of DATABASE
# (logged in as USER with PASSWORD over TLS, verify-full), clients by certificate
# (`auth_type = cert`, CN "orders" as the user), certs-dev's server certificate towards them.
# Its pid is in DIR/pgbouncer.pid once it listens; its log is DIR/pgbouncer.log.
pgbouncer_start() {
  local dir=$1 port=$2 pg_port=$3 db=$4 user=$5 password=$6 pool=$7 max_clients=$8
  cp certs-dev/server.crt "$dir/proxy.crt"; cp certs-dev/server.key "$dir/proxy.key"
  cp certs-dev/ca.crt "$dir/ca.crt"; chmod 600 "$dir/proxy.key"
  printf '"orders" ""\n' >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
$db = host=127.0.0.1 port=$pg_port dbname=$db user=$user password=$password
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = cert
auth_file = $dir/userlist.txt
client_tls_sslmode = verify-full
client_tls_key_file = $dir/proxy.key
client_tls_cert_file = $dir/proxy.crt
client_tls_ca_file = $dir/ca.crt
server_tls_sslmode = verify-full
server_tls_ca_file = $dir/ca.crt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = $max_clients
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  give_pg "$dir"
  # The server user's login limits (PAM) lower the descriptor limit again: raise it in the
  # shell, as far as this shell's own.
  as_pg sh -c 'ulimit -n "$1" && exec pgbouncer "$2"' sh "$(ulimit -n)" "$dir/pgbouncer.ini" >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    [ -s "$dir/pgbouncer.pid" ] && (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return
    sleep 0.1
  done
  echo "PgBouncer did not start; its log ends:" >&2
  tail -n 10 "$dir/pgbouncer.log" >&2 || true
  return 1
}
