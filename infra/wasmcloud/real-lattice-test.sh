#!/usr/bin/env bash
# `make real-lattice-test`: the shop on a real wasmCloud 1.x lattice, deployed by wadm.
#
# Starts nats-server (2.10 or newer, with JetStream) on 127.0.0.1:$LATTICE_PORT (default
# 4333, beside a NATS on 4222), a wasmCloud host (--allow-file-load) and wadm on it; makes a
# fresh database, with the services' roles and schemas, on the PostgreSQL at
# $POSTGRES_HOST:$POSTGRES_PORT (as $POSTGRES_USER, default postgres); renders
# target/wadm.local.yaml for them (make wadm-local, providers from $PROVIDERS_DIR) and runs
# `wash app deploy`. Then the black-box pipeline scenarios (real_lattice::*), a forged admin
# call to a service's own listener (must be 401) and a 32-client, 30 s load run go through
# the gateway on :8000. Everything it started is stopped at the
# end; the logs stay in target/real-lattice/. SKIP_SCENARIOS=1 runs the load run alone.
#
# Needs on PATH: wasmcloud, wadm, wash and nats-server-2.11 (or NATS_SERVER_BIN), as
# ../shared/tools/real-wasmcloud builds them. Not part of CI: none of them comes from a
# package registry. Without them it fails and says so.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${LATTICE_PORT:-4333}
NATS_SERVER_BIN=${NATS_SERVER_BIN:-nats-server-2.11}
PROVIDERS_DIR=${PROVIDERS_DIR:-/opt/real-wasmcloud/providers}
PG_HOST=${POSTGRES_HOST:-127.0.0.1}
PG_PORT=${POSTGRES_PORT:-5432}
PG_USER=${POSTGRES_USER:-postgres}
DATABASE=shop_real_lattice_$$
STATE=$PWD/target/real-lattice
export WASMCLOUD_CTL_PORT=$PORT

say() { printf '[real-lattice] %s\n' "$*"; }
missing=()
for program in wasmcloud wadm wash "$NATS_SERVER_BIN" psql; do
  command -v "$program" >/dev/null || missing+=("$program")
done
if ((${#missing[@]})); then
  say "not run: ${missing[*]} not on PATH (../shared/tools/real-wasmcloud builds the wasmCloud programs)"
  exit 1
fi
for provider in http-server http-client sqldb-postgres messaging-nats keyvalue-nats; do
  [[ -f $PROVIDERS_DIR/$provider.par.gz ]] || { say "not run: no $PROVIDERS_DIR/$provider.par.gz"; exit 1; }
done
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  say "something already listens on 127.0.0.1:$PORT; set LATTICE_PORT"
  exit 1
fi

rm -rf "$STATE"
mkdir -p "$STATE/jetstream"
pids=()
cleanup() {
  say "stopping"
  wash app undeploy shop >/dev/null 2>&1 || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -qc "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" postgres || true
}
trap cleanup EXIT

"$NATS_SERVER_BIN" -js -a 127.0.0.1 -p "$PORT" -sd "$STATE/jetstream" >"$STATE/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
wasmcloud --nats-host 127.0.0.1 --nats-port "$PORT" --allow-file-load --max-execution-time-ms 30000 \
  >"$STATE/host.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do grep -q 'wasmCloud host started' "$STATE/host.log" && break; sleep 0.2; done
grep -q 'wasmCloud host started' "$STATE/host.log" || { say "the host did not start"; tail -20 "$STATE/host.log"; exit 1; }
wadm --nats-server "127.0.0.1:$PORT" >"$STATE/wadm.log" 2>&1 &
pids+=($!)
sleep 3
say "lattice up on 127.0.0.1:$PORT (logs in $STATE)"

psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -qc "CREATE DATABASE $DATABASE" postgres
psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -q -v ON_ERROR_STOP=1 -d "$DATABASE" \
  -f infra/postgres/service-schemas.sql
NATS_URL=nats://127.0.0.1:$PORT POSTGRES_HOST=$PG_HOST POSTGRES_PORT=$PG_PORT \
  POSTGRES_DATABASE=$DATABASE PROVIDERS_DIR=$PROVIDERS_DIR make wadm-local
wash app deploy target/wadm.local.yaml
deployed=
for _ in $(seq 120); do
  if wash app status shop 2>/dev/null | grep -q 'Deployed'; then deployed=1; break; fi
  sleep 1
done
wash app status shop || true
[[ -n $deployed ]] || { say "wadm did not report the app deployed within 120 s"; exit 1; }
for _ in $(seq 120); do curl -fsS -o /dev/null http://127.0.0.1:8000/healthz && break; sleep 1; done
curl -fsS -o /dev/null http://127.0.0.1:8000/healthz || { say "the gateway does not answer on :8000"; exit 1; }
say "deployed; running the scenarios"

export SHOP_URL=http://127.0.0.1:8000
export SHOP_DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DATABASE"
[[ -n ${SKIP_SCENARIOS:-} ]] || cargo test --test pipeline real_lattice -- --ignored --test-threads 1
# A local process that calls a service's listener as an admin, without the gateway's
# signature, is refused (README, "Calls between services").
forged=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'x-shop-role: admin' \
  -H 'x-shop-actor: admin@shop.test' -H 'content-type: application/json' \
  -d '{"amount_cents": 100000}' http://127.0.0.1:8082/accounts/forged@example.com/credit)
[[ $forged == 401 ]] || { say "balance-checker answered a forged admin call with $forged, not 401"; exit 1; }
say "a forged admin call behind the gateway: 401"
cargo test --test lattice real_lattice -- --ignored --nocapture
say "passed"
