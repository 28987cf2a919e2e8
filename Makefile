# One task runner for Quern; `make` lists the targets.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/quern-target

.PHONY: help run test lint ci bench
help:
	@echo "make run    - start the server on 127.0.0.1:7311 (data in ./quern-data)"
	@echo "make test   - run every test (cargo test --workspace)"
	@echo "make lint   - cargo fmt --check and cargo clippy -D warnings"
	@echo "make ci     - what CI runs (.ci/run)"
	@echo "make bench  - the benchmark harness (release build)"

run:
	cargo run --release -p quern -- server

test:
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

ci:
	bash .ci/run

bench:
	cargo run --release -p quern-bench --
