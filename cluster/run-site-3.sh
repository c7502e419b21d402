#!/usr/bin/env bash
# Starts the 3-node site of cluster/site-3/ on this machine, in the background, from a source
# checkout. Logs go to ./idmesh-data/site-3/node-N.log. Stop with: kill $(cat ./idmesh-data/site-3/*.pid)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p idmesh
mkdir -p ./idmesh-data/site-3
cluster/pki-site-3.sh
for i in 1 2 3; do
  ./target/release/idmesh node --config "cluster/site-3/node$i.toml" \
    >"./idmesh-data/site-3/node-$i.log" 2>&1 &
  echo $! >"./idmesh-data/site-3/node-$i.pid"
done
echo "site starting; public APIs on 127.0.0.1:7710, :7720, :7730"
echo "try: IDMESH_CA=./idmesh-data/site-3/ca/ca.pem ./target/release/idmesh site status --server 127.0.0.1:7710"
