#!/usr/bin/env bash
# microshop on PostgreSQL: one database and one login role per service, owner of its database, and nobody
# else may connect to it. The official postgres image runs /docker-entrypoint-initdb.d/*.sh once, as the
# superuser, when it starts on an empty data directory (compose and the trial StatefulSet mount this file
# there); to run it by hand: PGHOST=... POSTGRES_USER=postgres MICROSHOP_DB_PASSWORD=... bash init-databases.sh
#
#   MICROSHOP_DATABASES             names to create (default: users products orders payments notifications)
#   MICROSHOP_DB_PASSWORD_<NAME>    password of role <name>, e.g. MICROSHOP_DB_PASSWORD_ORDERS ...
#   MICROSHOP_DB_PASSWORD           ... or one password for every role
#   <either of them>_FILE           a file holding the password instead (a mounted Secret)
# Idempotent: an existing role or database is left as it is.
set -euo pipefail

# The value of variable $1, or the content of the file named by ${1}_FILE.
secret() {
  local file_variable="${1}_FILE"
  if [[ -n "${!file_variable:-}" ]]; then
    cat -- "${!file_variable}"
  else
    printf '%s' "${!1:-}"
  fi
}

databases="${MICROSHOP_DATABASES:-users products orders payments notifications}"
for name in $databases; do
  variable="MICROSHOP_DB_PASSWORD_${name^^}"
  password="$(secret "$variable")"
  password="${password:-$(secret MICROSHOP_DB_PASSWORD)}"
  if [[ -z "$password" ]]; then
    echo "init-databases: no password for role ${name}: set ${variable} or MICROSHOP_DB_PASSWORD" >&2
    exit 1
  fi
  # The password goes through the environment, never the command line (visible to ps).
  MICROSHOP_INIT_PASSWORD="$password" psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres --set=name="$name" <<'SQL'
\getenv password MICROSHOP_INIT_PASSWORD
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
  echo "init-databases: database ${name} (owner ${name}) ready"
done
