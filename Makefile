# Sluice: `make run` starts the platform with a demo service; `make test` installs and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080

.PHONY: run test lint bench bench-sync bench-containers system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[demo,test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m sluice.demo.digits --train >/dev/null
	@echo "Starting Sluice on http://127.0.0.1:$(PORT) with the demo services 'digits' (a script per file)"
	@echo "and 'digits-warm' (the model kept loaded). In another shell:"
	@echo "  $(BIN)/sluice put-file digits/input examples/digits/samples/*.csv"
	@echo "  $(BIN)/sluice jobs digits"
	@echo "  $(BIN)/sluice ls digits/output"
	@echo "  $(BIN)/sluice get-file digits/output/digit-1579-0.json - "
	@echo "  $(BIN)/sluice run digits-warm examples/digits/samples/digit-1579-0.csv"
	$(BIN)/sluice serve --port $(PORT) --apply examples/digits/digits.yaml --apply examples/digits-handler/digits.yaml

# PostgreSQL server binaries for the throwaway test cluster (tests/pg.py); podman, runc and a
# static busybox and Debian's python3 for the container tests (tests/podman.py builds images of them).
SYSTEM_PACKAGES := postgresql podman runc busybox-static python3-minimal
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	  | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing $$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

test: system-deps $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/async_jobs.py

# Synchronous calls beside a bare ASGI app and Ray Serve (installed here: it is large).
bench-sync: $(STAMP)
	$(BIN)/pip install --quiet "ray[serve]>=2.9"
	$(BIN)/python benchmarks/sync.py

bench-containers: system-deps $(STAMP)
	$(BIN)/python benchmarks/containers.py

clean:
	rm -rf $(VENV) .sluice .pytest_cache
