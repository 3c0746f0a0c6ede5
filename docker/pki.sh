#!/bin/sh
# The demo's credentials, made once by the one-shot `pki` service (docker-compose.yml) in
# the agent image, before any agent starts:
# - in the `secrets` volume, for the agents only: the group's CA certificate, one certificate
#   and key per agent (Common Name = node id, the name others reach its admin API by), and
#   the secret that signs admin API tokens. The CA's key is deleted once the certificates
#   are made: nobody can mint a certificate for another agent afterwards (make new ones by
#   removing the volume: docker compose down -v).
# - in the `public` volume: the CA certificate (Prometheus and the clients verify the agents'
#   HTTPS with it) and a read-scope token for the writer's GET /v1/status, made again at
#   each `docker compose up` (it expires after 30 days).
set -eu
umask 077
if [ ! -f /pki/admin.secret ]; then
  binkeeper certs --out /pki a1=a1 a2=a2 a3=a3
  rm -f /pki/ca.key
  python3 -c 'import secrets; print(secrets.token_hex(32))' > /pki/admin.secret.tmp
  mv /pki/admin.secret.tmp /pki/admin.secret
fi
cp /pki/ca.pem /public/ca.pem.tmp
chmod 0644 /public/ca.pem.tmp
mv /public/ca.pem.tmp /public/ca.pem
binkeeper token --config /etc/binkeeper/agent.toml --scope read --ttl 2592000 \
  --subject demo-clients > /public/read.token.tmp
mv /public/read.token.tmp /public/read.token
echo "pki: certificates for a1, a2, a3 in the secrets volume; ca.pem and a read token in the public volume"
