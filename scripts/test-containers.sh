#!/usr/bin/env bash
# `make test-containers`: the deployment shapes, run in a real Docker engine.
#
#   1. image    `docker build .` makes the image; it runs pgvalet as nonroot, has no shell, and
#               carries its health check.
#   2. gateway  docker-compose.yml comes up (dev PKI, Postgres with TLS, local Secrets Manager,
#               pgvalet); psql on the host with the dev PKI gets rows through pgvalet; a rotation
#               by scripts/dev-secrets.py loses no query; `docker-compose stop` drains pgvalet
#               (idle client told 57P01, exit 0) within the stop grace period.
#   3. sidecar  deploy/ecs/task-definition.json's two containers run as ECS runs them
#               (scripts/ecs-task-run.py): pgvalet healthy, non-root, read-only root filesystem;
#               the application's PG* variables connect; `docker stop` with the task's
#               stopTimeout lets an open transaction commit, and pgvalet exits 0.
#
# What is missing is installed (docker.io, docker-compose; debootstrap when the public base
# images cannot be pulled, see scripts/local-base-images.sh), a dockerd is started when none
# answers, and everything made here is removed at the end: containers, networks, volumes, the
# images this run made (PGVALET_KEEP_IMAGES=1 keeps them, and so the build cache, for the next
# run) and the dockerd it started.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=pgvalet-ci
IMAGE=pgvalet-ci/pgvalet:test
ECS=pgvalet-ci-ecs
WORK=$(mktemp -d /tmp/pgvalet-containers.XXXXXX)
PY=.venv/bin/python
export DOCKER_BUILDKIT=0 # the classic builder: what docker-compose 1.29 builds with, one cache
export COMPOSE_PROJECT_NAME=$PROJECT
DOCKERD_PID=
IMAGES_BEFORE=
T0=$(date +%s)

log() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - T0)); }
fail() { echo "FAIL: $*" >&2; exit 1; }
compose() { docker-compose -f docker-compose.yml "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "$rc" != 0 ] && docker info >/dev/null 2>&1; then
    echo "-- logs of what ran (exit $rc)"
    compose logs --no-color --tail=40 2>/dev/null
    for c in $(docker ps -aq --filter "label=pgvalet.ecs-task=$ECS"); do docker logs --tail=40 "$c"; done
  fi
  log "cleaning up"
  if [ -n "${SERVICES:-}" ]; then kill "$SERVICES" 2>/dev/null; wait "$SERVICES" 2>/dev/null; fi
  if docker info >/dev/null 2>&1; then
    docker ps -aq --filter "label=pgvalet.ecs-task=$ECS" | xargs -r docker rm -fv >/dev/null
    compose down -v --remove-orphans >/dev/null 2>&1
    if [ -z "${PGVALET_KEEP_IMAGES:-}" ] && [ -n "$IMAGES_BEFORE" ]; then
      # Tagged images first, then the untagged layers and build stages this run left.
      for _ in 1 2 3; do
        comm -13 "$WORK/images.before" <(docker images -aq --no-trunc | sort -u) | xargs -r docker rmi -f >/dev/null 2>&1
      done
    fi
  fi
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    # The bridge dockerd made at its start, if there was none before.
    if [ -n "${BRIDGE_MADE:-}" ]; then ip link delete docker0 2>/dev/null; fi
    echo "stopped the dockerd this run started"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- the engine -------------------------------------------------------------------------------
log "docker engine"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  ip link show docker0 >/dev/null 2>&1 || BRIDGE_MADE=1
  mkdir -p target
  dockerd >target/dockerd.log 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 target/dockerd.log; fail "dockerd did not start"; }
  echo "started dockerd (pid $DOCKERD_PID, log target/dockerd.log)"
fi
docker images -aq --no-trunc | sort -u >"$WORK/images.before"
IMAGES_BEFORE=1
echo "engine $(docker version -f '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null | head -1 | sed 's/^/compose /')"

# --- base images: the public ones, or equivalents made from Debian's packages ---------------
log "base images"
public=(rust:1.95-slim-bookworm gcr.io/distroless/cc-debian12:nonroot debian:bookworm-slim postgres:15 motoserver/moto:5.1.4)
pulled=1
for image in "${public[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || docker pull -q "$image" >/dev/null 2>&1 || { pulled=; break; }
done
if [ -n "$pulled" ]; then
  echo "public base images: ${public[*]}"
else
  echo "public base images cannot be pulled: making them from Debian's packages"
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  scripts/local-base-images.sh build
  eval "$(scripts/local-base-images.sh --env)"
  # Postgres and moto (apt and pip, little CPU) are made while the image builds.
  scripts/local-base-images.sh services >"$WORK/services.log" 2>&1 &
  SERVICES=$!
fi
BUILD_ARGS=()
[ -n "${PGVALET_RUST_IMAGE:-}" ] && BUILD_ARGS+=(--build-arg "RUST_IMAGE=$PGVALET_RUST_IMAGE")
[ -n "${PGVALET_RUNTIME_IMAGE:-}" ] && BUILD_ARGS+=(--build-arg "RUNTIME_IMAGE=$PGVALET_RUNTIME_IMAGE")
[ -n "${PGVALET_DEVTOOLS_IMAGE:-}" ] && BUILD_ARGS+=(--build-arg "DEVTOOLS_IMAGE=$PGVALET_DEVTOOLS_IMAGE")
PG_IMAGE=${PGVALET_POSTGRES_IMAGE:-postgres:15}

# --- 1. the image -----------------------------------------------------------------------------
log "1. docker build ."
start=$(date +%s)
docker build -q -t "$IMAGE" "${BUILD_ARGS[@]}" . >/dev/null
echo "built $IMAGE in $(($(date +%s) - start)) s"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
health=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
echo "size $((size / 1000000)) MB, user $user, health check $health"
[ "$user" = nonroot ] || [ "$user" = 65532 ] || fail "image user is '$user'"
[ "$health" = '["CMD","/usr/local/bin/pgvalet","health"]' ] || fail "health check is $health"
version=$(docker run --rm "$IMAGE" --version)
[[ "$version" == pgvalet* ]] || fail "pgvalet --version: $version"
if docker run --rm --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then fail "the image has a shell"; fi
[ "$(docker run --rm "$IMAGE" health >/dev/null 2>&1; echo $?)" = 1 ] || fail "pgvalet health with nothing to ask must exit 1"
echo "ok: $version runs as nonroot, no shell, pgvalet health is the health check"

# --- 2. the gateway: docker-compose.yml ------------------------------------------------------
if [ -n "${SERVICES:-}" ]; then
  wait "$SERVICES" || { cat "$WORK/services.log"; fail "making the Postgres and moto images"; }
  cat "$WORK/services.log"
fi
log "2. docker-compose up"
export PGVALET_PORT=$(free_port) PGVALET_METRICS_PORT=$(free_port) PGVALET_PG_PORT=$(free_port) PGVALET_SM_PORT=$(free_port)
start=$(date +%s)
compose up -d --build >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log"; fail "compose up"; }
PGVALET_CONTAINER=$(compose ps -q pgvalet)
for _ in $(seq 1 90); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$PGVALET_CONTAINER")
  [ "$status" = healthy ] && break
  sleep 1
done
[ "$status" = healthy ] || fail "compose pgvalet is $status"
echo "compose up, pgvalet healthy, in $(($(date +%s) - start)) s"
docker cp "$PGVALET_CONTAINER:/pki/certs-dev" "$WORK/certs"
chmod 600 "$WORK"/certs/*.key
CERTS=$WORK/certs
orders="host=127.0.0.1 port=$PGVALET_PORT dbname=orders user=orders sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=$CERTS/orders.crt sslkey=$CERTS/orders.key"
rows=$(psql "$orders" -XAtc "select current_user, count(*) from generate_series(1, 3)")
[ "$rows" = "orders_svc|3" ] || fail "psql through the compose pgvalet: '$rows'"
echo "ok: psql on the host through pgvalet: $rows"
billing=$(psql "host=127.0.0.1 port=$PGVALET_PORT dbname=billing user=billing sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=$CERTS/billing.crt sslkey=$CERTS/billing.key" -XAtc "select current_user")
[ "$billing" = billing_svc ] || fail "billing: '$billing'"
if psql "host=127.0.0.1 port=$PGVALET_PORT dbname=orders user=orders sslmode=verify-full sslrootcert=$CERTS/ca.crt sslcert=$CERTS/billing.crt sslkey=$CERTS/billing.key" -XAtc "select 1" >/dev/null 2>&1; then
  fail "billing's certificate got into orders"
fi
echo "ok: billing's certificate reaches billing, not orders"

log "2. rotation through compose"
# Clients join one by one while the rotation runs, each holding its session (a new backend login
# per client), and query in a loop: none may fail.
"$PY" - "$PGVALET_PORT" "$CERTS" >"$WORK/load.log" 2>&1 <<'PY' &
import sys, threading, time, psycopg
port, certs = sys.argv[1], sys.argv[2]
dsn = (f"host=127.0.0.1 port={port} dbname=orders user=orders sslmode=verify-full "
       f"sslrootcert={certs}/ca.crt sslcert={certs}/orders.crt sslkey={certs}/orders.key")
stop, errors, counts = time.monotonic() + 12, [], []
def client(i):
    time.sleep(i * 0.5)
    n = 0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < stop:
                assert conn.execute("select 1").fetchone() == (1,)
                n += 1
                time.sleep(0.02)
    except Exception as e:
        errors.append(f"client {i}: {e!r}")
    counts.append(n)
threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(f"{len(counts)} clients, {sum(counts)} queries, {len(errors)} errors")
for e in errors: print(e)
sys.exit(1 if errors or min(counts) == 0 else 0)
PY
LOAD=$!
sleep 2
PGVALET_DEV_SM=http://127.0.0.1:$PGVALET_SM_PORT PGVALET_DEV_PG_HOST=127.0.0.1 PGVALET_DEV_PG_PORT=$PGVALET_PG_PORT \
  PGPASSWORD=superuser-dev-only "$PY" scripts/dev-secrets.py rotate orders
wait "$LOAD" || { cat "$WORK/load.log"; fail "queries failed during the rotation"; }
cat "$WORK/load.log"
after=$(psql "$orders" -XAtc "select 'after rotation'")
[ "$after" = "after rotation" ] || fail "after the rotation: '$after'"
echo "ok: no query lost across the rotation"

log "2. docker-compose stop drains pgvalet"
"$PY" - "$PGVALET_PORT" "$CERTS" "$WORK/stopping" >"$WORK/idle.log" 2>&1 <<'PY' &
import os, sys, time, psycopg
port, certs, flag = sys.argv[1:]
dsn = (f"host=127.0.0.1 port={port} dbname=orders user=orders sslmode=verify-full "
       f"sslrootcert={certs}/ca.crt sslcert={certs}/orders.crt sslkey={certs}/orders.key")
conn = psycopg.connect(dsn, autocommit=True)
conn.execute("select 1")
open(flag + ".ready", "w").close()
while not os.path.exists(flag):
    time.sleep(0.1)
time.sleep(1)
try:
    conn.execute("select 1")
    print("idle client: the query ran after the stop")
    sys.exit(1)
except psycopg.OperationalError as e:
    print(f"idle client: sqlstate={e.sqlstate} {str(e).strip().splitlines()[0]}")
    sys.exit(0 if e.sqlstate == "57P01" else 1)
PY
IDLE=$!
for _ in $(seq 1 100); do [ -f "$WORK/stopping.ready" ] && break; sleep 0.1; done
start=$(date +%s)
touch "$WORK/stopping"
compose stop pgvalet >/dev/null 2>&1
took=$(($(date +%s) - start))
wait "$IDLE" || { cat "$WORK/idle.log"; fail "the idle client was not told 57P01"; }
cat "$WORK/idle.log"
code=$(docker inspect -f '{{.State.ExitCode}}' "$PGVALET_CONTAINER")
[ "$code" = 0 ] || fail "pgvalet exited $code on docker-compose stop"
grace=$(docker inspect -f '{{.Config.StopTimeout}}' "$PGVALET_CONTAINER")
[ "$grace" = 30 ] || fail "the compose pgvalet's stop timeout is '$grace', not stop_grace_period's 30 s"
docker logs "$PGVALET_CONTAINER" >"$WORK/pgvalet.log" 2>&1
grep -q "pgvalet stopped" "$WORK/pgvalet.log" || fail "no 'pgvalet stopped' in the log"
echo "ok: stopped in ${took} s (grace period 30 s), exit 0"

# --- 3. the ECS sidecar task ------------------------------------------------------------------
log "3. ECS task: pgvalet + application in one network namespace"
# What ECS would read from Secrets Manager: the database secret pgvalet reads with the task
# role, and the TLS and client-certificate secrets the task definition injects.
"$PY" - "$PGVALET_SM_PORT" "$CERTS" <<'PY'
import json, sys, boto3
port, certs = sys.argv[1:]
pem = lambda name: open(f"{certs}/{name}").read()
dev = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
db = dev.get_secret_value(SecretId="pgvalet/dev/orders", VersionStage="AWSCURRENT")["SecretString"]
sm = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{port}", region_name="eu-west-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
for name, value in {
    "prod/orders/db": db,
    "prod/orders/pgvalet-tls": json.dumps({"cert": pem("server.crt"), "key": pem("server.key"),
                                           "client_ca": pem("ca.crt"), "rds_ca": pem("ca.crt")}),
    "prod/orders/client-cert": json.dumps({"cert": pem("orders.crt"), "key": pem("orders.key"), "ca": pem("ca.crt")}),
}.items():
    sm.create_secret(Name=name, SecretString=value)
PY
start=$(date +%s)
# The database and Secrets Manager are the compose stack's; the identity is the dev PKI's.
"$PY" scripts/ecs-task-run.py deploy/ecs/task-definition.json --prefix "$ECS" \
  --network "${PROJECT}_default" --sm-endpoint "http://127.0.0.1:$PGVALET_SM_PORT" \
  --image "pgvalet=$IMAGE" --image "orders=$PG_IMAGE" \
  --env pgvalet:PGVALET_BACKENDS__MAIN__HOST=postgres \
  --env pgvalet:PGVALET_BACKENDS__MAIN__SERVER_NAME=localhost \
  --env pgvalet:PGVALET_CREDENTIALS__ORDERS__ENDPOINT_URL=http://moto:5000 \
  --env pgvalet:PGVALET_ROUTES__0__IDENTITY=uri:spiffe://pgvalet.dev/svc/orders \
  --env pgvalet:AWS_ACCESS_KEY_ID=testing --env pgvalet:AWS_SECRET_ACCESS_KEY=testing \
  --env pgvalet:AWS_EC2_METADATA_DISABLED=true \
  --command 'orders=mkdir -p /run/orders && printf "%s" "$CLIENT_CERT_PEM" >/run/orders/client.crt && printf "%s" "$CLIENT_KEY_PEM" >/run/orders/client.key && printf "%s" "$PGVALET_CA_PEM" >/run/orders/pgvalet-ca.crt && chmod 600 /run/orders/client.key && exec sleep infinity'
echo "task running in $(($(date +%s) - start)) s"
P=$ECS-pgvalet
A=$ECS-orders
docker inspect -f 'pgvalet: user={{.Config.User}} read-only={{.HostConfig.ReadonlyRootfs}} health={{.State.Health.Status}} stop-timeout={{.Config.StopTimeout}}' "$P"
[ "$(docker inspect -f '{{.Config.User}}' "$P")" = 65532 ] || fail "user"
[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$P")" = true ] || fail "read-only root filesystem"
[ "$(docker inspect -f '{{.State.Health.Status}}' "$P")" = healthy ] || fail "health"
uids=$(docker top "$P" -o pid,uid | awk 'NR > 1 { print $2 }' | sort -u | tr '\n' ' ')
[ "$uids" = "65532 " ] || fail "pgvalet's processes run as uid $uids"
echo "ok: pgvalet healthy, processes uid $uids, root filesystem read-only"
rows=$(docker exec "$A" psql -XAtc "select current_user, current_database(), inet_server_port() is not null")
[ "$rows" = "orders_svc|orders|t" ] || fail "the application's PG* variables: '$rows'"
echo "ok: the application's PG* variables reach Postgres through pgvalet: $rows"
docker exec "$A" psql -XAtqc "create table drained (x int)"

log "3. docker stop with the task's stopTimeout lets an open transaction commit"
stop_timeout=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print(next(c["stopTimeout"] for c in t["containerDefinitions"] if c["name"] == "pgvalet"))' deploy/ecs/task-definition.json)
{ echo "begin;"; echo "insert into drained values (1);"; sleep 5; echo "insert into drained values (2);"; echo "commit;"; } \
  | docker exec -i "$A" psql -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose >"$WORK/txn.log" 2>&1 &
TXN=$!
{ echo "select 1;"; sleep 6; echo "select 2;"; } \
  | docker exec -i "$A" psql -X -v VERBOSITY=verbose >"$WORK/idle-ecs.log" 2>&1 &
IDLE=$!
sleep 2
start=$(date +%s)
docker stop -t "$stop_timeout" "$P" >/dev/null
took=$(($(date +%s) - start))
wait "$TXN" || { cat "$WORK/txn.log"; fail "the open transaction did not commit"; }
wait "$IDLE" || true
code=$(docker inspect -f '{{.State.ExitCode}}' "$P")
[ "$code" = 0 ] || fail "pgvalet exited $code on docker stop"
grep -q COMMIT "$WORK/txn.log" || { cat "$WORK/txn.log"; fail "no COMMIT"; }
grep -q 57P01 "$WORK/idle-ecs.log" || { cat "$WORK/idle-ecs.log"; fail "the idle client was not told 57P01"; }
committed=$(docker exec "$(compose ps -q postgres)" psql -U postgres -d orders -XAtc "select count(*) from drained")
[ "$committed" = 2 ] || fail "rows committed: $committed"
echo "ok: stopped in ${took} s (stopTimeout ${stop_timeout} s), exit 0; the transaction committed both rows; the idle client got $(grep -o '57P01: [a-z ]*' "$WORK/idle-ecs.log" | head -1)"

log "all container checks passed"
