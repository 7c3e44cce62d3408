# One entry point for people and CI. See README.md.
COMPONENTS := gateway orders balance-checker stock-checker vouchers
WASM_DIR := target/wasm32-wasip2/release
WASMCLOUD_TARGET_DIR := target/wasmcloud
WASMCLOUD_WASM_DIR := $(WASMCLOUD_TARGET_DIR)/wasm32-wasip2/release
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TARGETS := decode_request verify_envelope tamper_signed_envelope
## Seconds each fuzz target runs in `make fuzz` (CI's short run; raise it for a long one).
FUZZ_SECONDS ?= 20

## Where `make check-newest-stable` builds with the newest stable Rust.
NEWEST_STABLE_TARGET_DIR := target/newest-stable

.PHONY: setup build build-wasmcloud check-worlds check-newest-stable test serve

## Installs what building and testing need: the pinned toolchain of rust-toolchain.toml
## (with its wasm32-wasip2 target, rustfmt and clippy) and cargo-fuzz.
## A pinned toolchain that is a symlink to `stable` (as on some machine images) would change
## when stable is updated: it is replaced by a real install first.
setup:
	@channel=$$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml); \
	for dir in "$${RUSTUP_HOME:-$$HOME/.rustup}"/toolchains/$$channel-*; do \
		if [ -L "$$dir" ]; then echo "setup: $$dir is a symlink; installing $$channel itself"; rm "$$dir"; fi; \
	done
	rustup toolchain install
	@if ! cargo fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)"; then \
		cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION); fi

## Builds every component for wasm32-wasip2 (what spin.toml references).
build:
	cargo build --target wasm32-wasip2 --release $(addprefix -p ,$(COMPONENTS))

## Builds every component for wasmCloud 1.x (what wadm.yaml deploys), in its own target dir.
build-wasmcloud:
	cargo build --target wasm32-wasip2 --release --no-default-features --features wasmcloud \
		--target-dir $(WASMCLOUD_TARGET_DIR) $(addprefix -p ,$(COMPONENTS))

## Checks each built component against the world of its host (wit/world.wit), matching
## imports by semver-compatible version as the hosts do (tests/world-check).
check-worlds: build build-wasmcloud
	$(MAKE) --no-print-directory check-worlds-in SPIN_DIR=$(WASM_DIR) WASMCLOUD_DIR=$(WASMCLOUD_WASM_DIR)

## The world check of the components in SPIN_DIR and WASMCLOUD_DIR: on Spin the gateway
## targets `spin-service` and each service `spin-<service>` (which exports its API); on
## wasmCloud every component targets `wasmcloud-service`.
.PHONY: check-worlds-in
check-worlds-in:
	cargo run -q -p world-check -- --wit wit --world spin-service $(SPIN_DIR)/gateway.wasm
	for component in $(filter-out gateway,$(COMPONENTS)); do \
		cargo run -q -p world-check -- --wit wit --world spin-$$component \
			$(SPIN_DIR)/$$(echo $$component | tr - _).wasm || exit 1; done
	cargo run -q -p world-check -- --wit wit --world wasmcloud-service \
		$(addprefix $(WASMCLOUD_DIR)/,$(addsuffix .wasm,$(subst -,_,$(COMPONENTS))))

## Builds both flavours with the newest stable Rust (its std may import a newer WASI 0.2.x
## than wit/ vendors) and checks them against their worlds: what a user on today's stable gets.
check-newest-stable:
	rustup toolchain install stable --profile minimal --target wasm32-wasip2
	rustup run stable rustc --version
	rustup run stable cargo build --target wasm32-wasip2 --release \
		--target-dir $(NEWEST_STABLE_TARGET_DIR)/spin $(addprefix -p ,$(COMPONENTS))
	rustup run stable cargo build --target wasm32-wasip2 --release --no-default-features \
		--features wasmcloud --target-dir $(NEWEST_STABLE_TARGET_DIR)/wasmcloud $(addprefix -p ,$(COMPONENTS))
	$(MAKE) --no-print-directory check-worlds-in SPIN_DIR=$(NEWEST_STABLE_TARGET_DIR)/spin/wasm32-wasip2/release \
		WASMCLOUD_DIR=$(NEWEST_STABLE_TARGET_DIR)/wasmcloud/wasm32-wasip2/release

## Builds both flavours, checks the worlds, and runs every test: domain, service kit, test
## host (pipeline on both flavours, chaos, authorization, events), shopctl, the dashboards in
## Chromium, the schema-driven API test and a short run of every fuzz target.
test: check-worlds
	cargo test
	$(MAKE) browser-test
	$(MAKE) api-test
	$(MAKE) fuzz

## The black-box pipeline suite (tests/host/tests/pipeline.rs, its real_spin_* tests) and the
## crash test (tests/host/tests/crash.rs) against a real Spin 4.x: `spin up` of spin.toml,
## one instance on SQLite and two on PostgreSQL (DATABASE_URL's server). Not part of `make test` or CI: Spin cannot be installed from the
## package registries (../shared/tools/real-spin builds it); without it this fails and says so.
.PHONY: real-spin-test
real-spin-test: build
	@if ! spin --version 2>/dev/null | grep -q '^spin 4\.'; then \
		echo "real-spin-test: no Spin 4.x on PATH (build it with ../shared/tools/real-spin); nothing was tested"; \
		exit 1; fi
	spin --version
	cargo test --test pipeline --test crash real_spin -- --ignored --test-threads 2

## The black-box pipeline scenarios (real_lattice::*) and a 32-client, 30 s load run on a
## real wasmCloud 1.x lattice deployed by wadm (infra/wasmcloud/real-lattice-test.sh). Not
## part of `make test` or CI: the wasmCloud programs cannot be installed from the package
## registries (../shared/tools/real-wasmcloud builds them); without them this fails and says so.
.PHONY: real-lattice-test
real-lattice-test: build-wasmcloud
	infra/wasmcloud/real-lattice-test.sh

## Schemathesis from openapi.yaml against the app on the test host: no 5xx, every answer as
## specified (tests/api/schemathesis.sh; installs schemathesis into target/schemathesis-venv).
.PHONY: api-test
api-test: build
	SCHEMATHESIS_MAX_EXAMPLES=$${SCHEMATHESIS_MAX_EXAMPLES:-10} tests/api/schemathesis.sh

## Runs every cargo-fuzz target for FUZZ_SECONDS seconds (fuzz/README.md); fails on a crash.
.PHONY: fuzz
fuzz:
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t; \
		seeds=; [ -d seeds/$$t ] && seeds=seeds/$$t; \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t $$seeds -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## Drives the gateway's dashboards in headless Chromium (tests/browser): installs Chromium when
## /usr/bin/chromium is missing, builds the test host and the components, runs the tests.
## The test host is built with --all-targets, as `cargo test` builds it: `-p test-host` alone
## unifies other features of its dependencies and would compile wasmtime a second time.
## Screenshots: target/browser-screenshots/. SHOP_URL=http://... tests a running app instead.
.PHONY: browser-test
browser-test:
	@if [ ! -x /usr/bin/chromium ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }; fi
	cd tests/browser && npm ci --no-audit --no-fund
	cargo build --all-targets
	$(MAKE) build
	cd tests/browser && npm test

## Runs the app on the wasmtime test host at http://127.0.0.1:3000 (when Spin is not installed).
serve: build
	cargo run --release -p test-host -- serve --manifest spin.toml --listen 127.0.0.1:3000 --data-dir .spin \
		--runtime-config-file infra/spin/runtime-config.toml

## Renders target/wadm.local.yaml: wadm.yaml with file:// images of the wasmCloud build and
## of the provider archives in infra/wasmcloud/providers (see infra/wasmcloud/README.md).
.PHONY: wadm-local
wadm-local: build-wasmcloud
	sh infra/wasmcloud/render-local.sh

## Measures order accept, end to end and instantiation cost on the test host and rewrites
## BENCHMARKS.md (tests/bench). Takes a few minutes; run it on a quiet machine.
.PHONY: bench
bench: build
	cargo build --target wasm32-wasip2 --release -p bench-hello
	cargo bench -p shop-bench

## `make bench`, and the same order accept and end-to-end runs on a real `spin up` it starts
## (tests/bench/real-spin.sh; SHOP_URL=http://IP:PORT measures any running app instead).
## Needs Spin 4.x on PATH: not part of CI.
.PHONY: bench-real-spin
bench-real-spin: build
	cargo build --target wasm32-wasip2 --release -p bench-hello
	tests/bench/real-spin.sh
