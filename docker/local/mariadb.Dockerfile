# A stand-in for the official `mariadb:10.11` image where no registry can be reached (the
# container test, tests/docker/): Debian bookworm's MariaDB 10.11 on a base image made with
# debootstrap. It takes what docker-compose.yml gives the official image: options to
# mariadbd as the command, MARIADB_ROOT_PASSWORD, data in /var/lib/mysql.
FROM local/bookworm:base
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends mariadb-server \
 && rm -rf /var/lib/apt/lists/* /var/lib/mysql \
 && install -d -o mysql -g mysql /var/lib/mysql /run/mysqld \
 && sed -Ei 's/^(bind-address|log_error|log-error)/#&/' /etc/mysql/mariadb.conf.d/*.cnf \
 && printf '[mariadb]\nhost-cache-size=0\nskip-name-resolve\n' \
      > /etc/mysql/mariadb.conf.d/05-skipcache.cnf
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER mysql
VOLUME /var/lib/mysql
EXPOSE 3306
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["mariadbd"]
