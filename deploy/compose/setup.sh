#!/bin/sh
# docker-compose.yml's one-shot setup, into the `pki` volume: the dev PKI, Postgres' TLS files,
# and for each service a password, the SQL that gives it a role and a database, and the secret
# JSON the local Secrets Manager will hold. What exists already is kept, so `docker compose up`
# twice gives the same passwords; `docker compose down -v` starts over.
set -eu
D=/pki
[ -f "$D/certs-dev/ca.crt" ] || devpki "$D/certs-dev"
# pgvalet runs as distroless' nonroot user (65532), Postgres as 999.
chown 65532 "$D/certs-dev/server.key"
mkdir -p "$D/pg" "$D/initdb" "$D/secrets"
cp "$D/certs-dev/postgres.crt" "$D/pg/server.crt"
cp "$D/certs-dev/postgres.key" "$D/pg/server.key"
chown -R 999:999 "$D/pg"
chmod 600 "$D/pg/server.key"
for svc in orders billing; do
  [ -f "$D/secrets/$svc.json" ] && continue
  password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  printf "CREATE ROLE %s_svc LOGIN PASSWORD '%s';\nCREATE DATABASE %s OWNER %s_svc;\nREVOKE ALL ON DATABASE %s FROM PUBLIC;\n" \
    "$svc" "$password" "$svc" "$svc" "$svc" >"$D/initdb/$svc.sql"
  printf '{"engine":"postgres","username":"%s_svc","password":"%s","host":"postgres","port":5432,"dbname":"%s"}\n' \
    "$svc" "$password" "$svc" >"$D/secrets/$svc.json"
done
chmod 644 "$D"/initdb/*.sql
echo "pgvalet dev setup done: PKI in the pki volume under certs-dev/"
