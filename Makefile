# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test check-deploy lint fmt bench bench-llm fuzz function-order

## The whole stack, embedded default: SQLite under data/ and a nats-server it starts itself.
run:
	@scripts/ensure-deps.sh nats
	$(CARGO) build --bin xenios
	target/debug/xenios dev

## Every test in the workspace against private nats-server and PostgreSQL instances, then
## the deployment checks. The OpenAI SDK test runs the official `openai` package from .venv
## (made when missing); the deployment checks bring their tools into .venv-deploy.
test:
	@scripts/ensure-deps.sh nats postgres pgbouncer python openssl curl
	@scripts/ensure-venv.sh >/dev/null
	$(CARGO) build -p xenios-devstack --bin with-postgres
	@set -o pipefail; XENIOS_TEST_PYTHON=$(CURDIR)/.venv/bin/python \
	  target/debug/with-postgres -- $(CARGO) test --workspace --all-targets --no-fail-fast 2>&1 \
	  | tee target/test.log; status=$$?; \
	  awk '/^test result:/ { passed += $$4; failed += $$6 } \
	    END { printf "tests: %d passed, %d failed\n", passed, failed }' target/test.log; \
	  scripts/check-deploy.sh || status=1; \
	  exit $$status

## The deployment files (compose/, ansible/, Caddyfile.tmpl) checked without Docker or hosts.
check-deploy:
	$(CARGO) build --bin xenios
	scripts/check-deploy.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Release build vs the Celery baseline, side by side (see scripts/bench.sh; ~10 min).
bench:
	scripts/bench.sh $(N) $(C) $(RUNS)

## Every fuzz target in fuzz/ for FUZZ_SECONDS each, seeds included (needs nightly and
## cargo-fuzz; not part of `make test`). Crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
fuzz:
	@set -e; for t in $$($(CARGO) +nightly fuzz list); do \
	  dict=""; case $$t in docx*|xlsx*|pptx*|odf*|extract) dict="-dict=fuzz/dicts/ooxml.dict";; esac; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  mkdir -p fuzz/corpus/$$t fuzz/seeds/$$t; \
	  $(CARGO) +nightly fuzz run -O $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) $$dict; \
	done

## LLM token streaming through the whole path vs straight to mock-llm and the FastAPI relay.
bench-llm:
	scripts/bench-llm.sh $(N) $(C) $(RUNS)

## Regenerate bins/function-order.txt, the functions release builds place together so that
## less of the binaries' code is resident (see scripts/function-order.sh; ~25 min).
function-order:
	scripts/function-order.sh
