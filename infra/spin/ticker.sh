#!/usr/bin/env bash
# Drives the pipeline's timers on Spin (re-deliveries with backoff, check time-outs); only
# ticks send retries, so run it beside `spin up`: every second, POST /api/v1/admin/tick
# with an admin token.
#   SHOP_URL=http://127.0.0.1:3000 SHOP_ADMIN_TOKEN=<jwt with role admin> infra/spin/ticker.sh
set -u
url="${SHOP_URL:-http://127.0.0.1:3000}"
: "${SHOP_ADMIN_TOKEN:?set SHOP_ADMIN_TOKEN to an admin bearer token}"
while true; do
  curl -fsS -o /dev/null -X POST "$url/api/v1/admin/tick" -H "authorization: Bearer $SHOP_ADMIN_TOKEN" \
    || echo "tick failed at $(date -u +%FT%TZ)" >&2
  sleep "${SHOP_TICK_SECONDS:-1}"
done
