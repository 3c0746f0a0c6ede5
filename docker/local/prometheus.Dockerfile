# A stand-in for the official `prom/prometheus` image where no registry can be reached (the
# container test, tests/docker/): Debian bookworm's Prometheus on a base image made with
# debootstrap, with the official image's entrypoint, user and data directory.
FROM local/bookworm:base
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nobody -g nogroup /prometheus
USER 65534:65534
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
