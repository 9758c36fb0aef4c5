#!/bin/sh
# The first start of postgres:16-alpine, in brief: an empty $PGDATA gets a new cluster whose superuser is
# $POSTGRES_USER with $POSTGRES_PASSWORD, a database of the same name, and password logins from the network.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$POSTGRES_USER" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
        --locale=C.UTF-8 --encoding=UTF8 -D "$PGDATA" > /dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "CREATE DATABASE \"$POSTGRES_USER\";" | postgres --single -D "$PGDATA" postgres > /dev/null
    echo "entrypoint: made a new cluster in $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
