# Every target sets up what it needs: a fresh clone runs `make test` or `make demo` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test unit integration e2e demo lint bench manifests verify clean image-test

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The image tier (image-test) runs beside the suite; its summary follows the suite's output.
test: venv
	@mkdir -p bench/out
	@$(PY) -m pytest -m image tests/image -q -p no:cacheprovider >bench/out/image-test.log 2>&1 & image=$$!; \
	$(PY) -m pytest tests/unit tests/integration; suite=$$?; \
	wait $$image; tier=$$?; \
	echo "--- image tier (make image-test; full output in bench/out/image-test.log)"; \
	tail -n 15 bench/out/image-test.log; \
	[ $$suite -eq 0 ] && [ $$tier -eq 0 ]

unit: venv
	$(PY) -m pytest tests/unit

integration: venv
	$(PY) -m pytest tests/integration

e2e: venv
	$(PY) -m pytest -m e2e tests/e2e

demo: venv
	$(PY) -m tests.harness.demo

lint: venv
	$(VENV)/bin/ruff check operator tests scripts bench
	$(VENV)/bin/ruff format --check operator tests scripts bench
	$(VENV)/bin/mypy

# regenerate the chart's CRD copies, deploy/manifests and the values table in docs/install.md
manifests: venv
	$(PY) scripts/render-manifests.py

# fail when a generated file is stale (also checked by the test suite)
verify: venv
	$(PY) scripts/render-manifests.py --check

# build the Dockerfile with buildah and test the image, as root (installs buildah and mmdebstrap
# when missing; docs/image.md). Figures: bench/out/image.json
image-test: venv
	$(PY) -m pytest -m image tests/image $(IMAGE_TEST_ARGS)

bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/out .demo
