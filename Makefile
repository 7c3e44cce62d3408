# One entry point for people and CI. See README.md.
COMPONENTS := gateway orders balance-checker stock-checker vouchers
WASM_DIR := target/wasm32-wasip2/release
WASM_TOOLS_VERSION := 1.263.0

.PHONY: setup build check-worlds test serve

## Installs what building and testing need: the wasm32-wasip2 target and wasm-tools.
setup:
	rustup target add wasm32-wasip2
	@if ! wasm-tools --version 2>/dev/null | grep -q "$(WASM_TOOLS_VERSION)"; then \
		cargo install wasm-tools --locked --version $(WASM_TOOLS_VERSION); fi

## Builds every component for wasm32-wasip2 (what spin.toml references).
build:
	cargo build --target wasm32-wasip2 --release $(addprefix -p ,$(COMPONENTS))

## Checks each built component against the Spin world it targets (wit/world.wit).
check-worlds: build
	@for c in $(subst -,_,$(COMPONENTS)); do \
		wasm-tools component targets wit $(WASM_DIR)/$$c.wasm --world spin-service || exit 1; \
		echo "$$c.wasm targets shop:platform/spin-service"; \
	done

## Builds, checks the worlds, and runs every test (domain, service kit, test host, pipeline).
test: check-worlds
	cargo test

## Runs the app on the wasmtime test host at http://127.0.0.1:3000 (when Spin is not installed).
serve: build
	cargo run --release -p test-host -- serve --manifest spin.toml --listen 127.0.0.1:3000 --data-dir .spin
