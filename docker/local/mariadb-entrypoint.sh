#!/bin/sh
# The part of the official mariadb image's entrypoint that docker-compose.yml relies on:
# arguments that start with '-' are options to mariadbd; on an empty data directory, make
# the system tables with root@localhost and root@'%' identified by $MARIADB_ROOT_PASSWORD.
# Like the official image, initialising writes nothing to the binlog, so every server of
# the group starts with the same (empty) GTID history.
set -eu
if [ "${1#-}" != "$1" ]; then
  set -- mariadbd "$@"
fi
if [ "$1" = mariadbd ] && [ ! -d /var/lib/mysql/mysql ]; then
  : "${MARIADB_ROOT_PASSWORD:?is required to initialise the data directory}"
  password=$(printf '%s' "$MARIADB_ROOT_PASSWORD" | sed "s/[\\\\']/\\\\&/g")
  mariadb-install-db --datadir=/var/lib/mysql --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve --skip-log-bin > /dev/null
  mariadbd --bootstrap --datadir=/var/lib/mysql --skip-log-bin <<SQL
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY '$password';
CREATE USER 'root'@'%' IDENTIFIED BY '$password';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
  echo "docker-entrypoint.sh: initialised /var/lib/mysql (root@localhost, root@'%')" >&2
fi
exec "$@"
