#!/bin/sh
# Postgres' first start in docker-compose.yml: the service roles and databases setup.sh wrote.
set -eu
for f in /pki/initdb/*.sql; do
  psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres -f "$f"
done
