#!/bin/sh
# Mints a development bearer token for the shop: an HS256 JWT with the claims the gateway
# checks (sub, role, exp), signed with AUTH_SECRET. POSIX sh + openssl only.
#
#   infra/wasmcloud/mint-token.sh SUBJECT ROLE [SECONDS]
#     ROLE: customer | staff | admin;  SECONDS: lifetime, default 3600
#     AUTH_SECRET: the gateway's auth_secret (default: the development value in wadm.yaml)
#
#   ADMIN=$(infra/wasmcloud/mint-token.sh ops@shop.test admin)
#   ALICE=$(infra/wasmcloud/mint-token.sh alice@example.com customer)
#
# For local runs only: anyone holding the secret can mint any role.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 SUBJECT customer|staff|admin [SECONDS]" >&2
  exit 2
fi
sub=$1 role=$2 ttl=${3:-3600}
case "$role" in
  customer | staff | admin) ;;
  *) echo "$0: role must be customer, staff or admin" >&2; exit 2 ;;
esac
case "$ttl" in
  '' | *[!0-9]*) echo "$0: SECONDS must be a whole number" >&2; exit 2 ;;
esac
case "$sub" in
  '' | *'"'* | *'\'*) echo "$0: SUBJECT must be non-empty, without quotes or backslashes" >&2; exit 2 ;;
esac
secret=${AUTH_SECRET:-dev-auth-secret-change-me}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

exp=$(($(date +%s) + ttl))
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","role":"%s","exp":%s}' "$sub" "$role" "$exp" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" |
  openssl dgst -sha256 -hmac "$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"
