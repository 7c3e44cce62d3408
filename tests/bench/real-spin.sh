#!/usr/bin/env bash
# `make bench-real-spin`: the whole bench, and order accept and end to end on a real
# `spin up` of spin.toml (embedded SQLite, a database per service, rate limit off) that this
# script starts in a fresh directory and stops at the end (SHOP_URL for the bench).
# Needs a Spin 4.x on PATH (../shared/tools/real-spin builds it); fails and says so without.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(spin --version 2>/dev/null || true)
if [[ $version != "spin 4."* ]]; then
  echo "bench-real-spin: no Spin 4.x on PATH (build it with ../shared/tools/real-spin); nothing was measured" >&2
  exit 1
fi
port=${BENCH_SPIN_PORT:-3310}
dir=$(mktemp -d /tmp/shop-bench-spin.XXXXXX)
# Spin takes the runtime config's relative SQLite paths from its working directory.
# In a session of its own: spin up serves from a child (spin trigger http), which must stop
# with it.
# The instance pool sized for the 512-connection runs (Spin's default holds about 125
# composed gateway instances; README.md, "Overload").
(cd "$dir" && SPIN_MAX_INSTANCE_COUNT=${SPIN_MAX_INSTANCE_COUNT:-6000} exec setsid spin up --from "$OLDPWD/spin.toml" --listen "127.0.0.1:$port" \
  --state-dir "$dir/.spin" --runtime-config-file "$OLDPWD/infra/spin/runtime-config.toml" \
  --variable rate_limit_per_minute=0 >"$dir/spin.log" 2>&1) &
spin_pid=$!
trap 'kill -- -$spin_pid 2>/dev/null; wait $spin_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 120); do curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 1; done
curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { tail -20 "$dir/spin.log"; exit 1; }
SHOP_URL="http://127.0.0.1:$port" SHOP_SPIN_DIR="$dir" SHOP_DESCRIPTION="$version, SQLite" \
  cargo bench -p shop-bench -- "$@"
