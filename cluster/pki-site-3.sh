#!/usr/bin/env bash
# Makes what the 3-node site of cluster/site-3/ needs to run with TLS, once (files that exist
# are kept): a key-encryption key, the site's CA and one certificate per node, all under
# ./idmesh-data/site-3 (private keys sealed with the KEK, mode 0600). A real site keeps the KEK
# and ca/ off the nodes' disks; this is a trial on one machine.
set -euo pipefail
cd "$(dirname "$0")/.."
idmesh=./target/release/idmesh
dir=./idmesh-data/site-3
mkdir -p "$dir"
[ -f "$dir/kek" ] || "$idmesh" site gen-kek --out "$dir/kek"
[ -f "$dir/ca/ca.pem" ] || "$idmesh" site init-ca --trust-domain acme.example --site local \
  --out "$dir/ca" --kek-file "$dir/kek"
for i in 1 2 3; do
  [ -f "$dir/tls/node-$i/node.pem" ] || "$idmesh" site issue-cert --ca-dir "$dir/ca" --kek-file "$dir/kek" \
    --node-id "$i" --name 127.0.0.1 --name localhost --out "$dir/tls/node-$i"
done
[ -f "$dir/admin/admin.pem" ] || "$idmesh" site issue-cert --ca-dir "$dir/ca" --kek-file "$dir/kek" \
  --admin local-admin --out "$dir/admin"
echo "clients: export IDMESH_CA=$dir/ca/ca.pem"
echo "admins (join-token, add-node, remove-node): --client-cert $dir/admin/admin.pem --client-key $dir/admin/admin.key"
