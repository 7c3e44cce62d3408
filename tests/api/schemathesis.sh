#!/usr/bin/env bash
# Schema-driven API test: schemathesis generates requests from openapi.yaml (valid and
# invalid ones) and sends them to the app on the wasmtime test host, once as an admin and
# once as a customer. It fails if any answer is a 5xx, has a status the spec does not list
# for the operation, a different content type, or a body that does not match the schema.
#
# Needs the Spin build of the components (`make build`). Installs schemathesis into
# target/schemathesis-venv on first use. Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  generated cases per operation and phase (default 20)
#   SCHEMATHESIS_PORT          where the test host listens (default 3917)
#   SCHEMATHESIS_SEED          fixes the generated data, to reproduce a run
set -euo pipefail
cd "$(dirname "$0")/../.."

schemathesis_version=4.32.5
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-20}
port=${SCHEMATHESIS_PORT:-3917}
base_url="http://127.0.0.1:${port}"
venv=target/schemathesis-venv
report_dir=target/schemathesis-report

for component in gateway orders balance_checker stock_checker vouchers; do
    if [ ! -f "target/wasm32-wasip2/release/${component}.wasm" ]; then
        echo "missing target/wasm32-wasip2/release/${component}.wasm: run 'make build' first" >&2
        exit 2
    fi
done

if ! "${venv}/bin/schemathesis" --version 2>/dev/null | grep -q "${schemathesis_version}"; then
    python3 -m venv "${venv}"
    "${venv}/bin/pip" install --quiet "schemathesis==${schemathesis_version}"
fi

# Every target, as `cargo test` builds them: building only the two binaries unifies other
# features of their dependencies and would compile wasmtime a second time.
cargo build --quiet --all-targets

data_dir=$(mktemp -d)
mkdir -p "${report_dir}"
# Short event streams so that SSE operations answer within the request timeout.
# In the data directory: the runtime config's relative SQLite paths (one database per
# service) are taken from the working directory, as Spin takes them.
root=$PWD
(cd "${data_dir}" && exec "${root}/target/debug/test-host" serve --manifest "${root}/spin.toml" \
    --listen "127.0.0.1:${port}" --data-dir "${data_dir}" \
    --runtime-config-file "${root}/infra/spin/runtime-config.toml" \
    --variable rate_limit_per_minute=0 \
    --variable stream_max_ms=1500 --variable stream_heartbeat_ms=500) \
    > "${report_dir}/test-host.log" 2>&1 &
host_pid=$!
trap 'kill "${host_pid}" 2>/dev/null || true; wait "${host_pid}" 2>/dev/null || true; rm -rf "${data_dir}"' EXIT

for _ in $(seq 1 240); do
    if curl -fsS "${base_url}/healthz" > /dev/null 2>&1; then
        break
    fi
    if ! kill -0 "${host_pid}" 2>/dev/null; then
        echo "the test host exited; see ${report_dir}/test-host.log" >&2
        exit 1
    fi
    sleep 0.5
done
curl -fsS "${base_url}/healthz" > /dev/null

token() { target/debug/shopctl --role "$1" token "$2" 2> /dev/null; }
admin_token=$(token admin admin@shop.test)
customer_token=$(token customer alice@example.com)

# Some data for the generated requests to find: a product and a customer with credit.
curl -fsS -X PUT "${base_url}/api/v1/products/WIDGET-1" -H "authorization: Bearer ${admin_token}" \
    -H 'content-type: application/json' -d '{"name":"Widget","price_cents":6000,"stock":1000}' > /dev/null
curl -fsS -X POST "${base_url}/api/v1/accounts/alice@example.com/credit" \
    -H "authorization: Bearer ${admin_token}" -H 'content-type: application/json' \
    -d '{"amount_cents":100000000}' > /dev/null

run_as() {
    local who=$1 token=$2
    echo "== schemathesis as ${who}"
    # One worker: with two threads, Hypothesis's concurrent `ast.parse` calls hit CPython
    # 3.11's "AST constructor recursion depth mismatch" now and then (a crash of the tool,
    # not a finding about the API).
    "${venv}/bin/schemathesis" run openapi.yaml --url "${base_url}" \
        --header "Authorization: Bearer ${token}" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --phases examples,coverage,fuzzing \
        --max-examples "${max_examples}" \
        ${SCHEMATHESIS_SEED:+--seed "${SCHEMATHESIS_SEED}"} \
        --request-timeout 10 \
        --workers 1 \
        --suppress-health-check too_slow \
        --report junit --report-junit-path "${report_dir}/${who}.xml"
}

status=0
run_as admin "${admin_token}" || status=1
run_as customer "${customer_token}" || status=1
exit "${status}"
