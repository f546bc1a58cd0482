# Every target sets up what it needs: a fresh clone runs `make test` or `make demo` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test sdk-tier test-sdks image-test unit integration security userpath e2e demo playground lint bench manifests verify clean flake-check

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# Two tiers that mostly wait on subprocesses run in their own pytest processes beside the
# suite: the SDK compatibility tier (real AWS SDK releases) and the image tier (the Dockerfile
# built with buildah and run read-only as uid 65532; it installs buildah with apt, so it needs
# root: elsewhere it is skipped with a note unless CI=true). Their output follows the suite's.
SDK_LOG := $(VENV)/sdk-tier.log
IMAGE_LOG := bench/out/image-test.log
test: venv
	@mkdir -p bench/out
	@$(PY) -m pytest -p no:cacheprovider tests/sdk > $(SDK_LOG) 2>&1 & sdk=$$!; \
	if [ "$$(id -u)" = 0 ] || command -v buildah >/dev/null || [ "$$CI" = true ]; then \
	  $(PY) -m pytest -m image tests/image -q -p no:cacheprovider > $(IMAGE_LOG) 2>&1 & image=$$!; \
	else echo "image tier skipped: it needs root (apt-get install buildah mmdebstrap); run make image-test as root" > $(IMAGE_LOG); image=; fi; \
	$(PY) -m pytest tests/unit tests/integration tests/security tests/userpath; main=$$?; \
	wait $$sdk; sdk_rc=$$?; image_rc=0; [ -n "$$image" ] && { wait $$image; image_rc=$$?; }; \
	echo "--- SDK compatibility tier (tests/sdk) ---"; cat $(SDK_LOG); \
	echo "--- image tier (make image-test; full output in $(IMAGE_LOG)) ---"; tail -n 15 $(IMAGE_LOG); \
	test $$main -eq 0 && test $$sdk_rc -eq 0 && test $$image_rc -eq 0

sdk-tier: venv
	$(PY) -m pytest tests/sdk

# Opt-in (CI may skip it): Go SDK v1/v2, Ruby and the AWS CLI v2 from Debian's packages
# (installed with apt-get when missing and running as root). Results: docs/sdks.md.
DEBIAN_SDK_PACKAGES := golang-go golang-github-aws-aws-sdk-go-dev golang-github-aws-aws-sdk-go-v2-dev ruby-aws-sdk-core awscli
test-sdks: venv
	@if ! dpkg -s $(DEBIAN_SDK_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEBIAN_SDK_PACKAGES); \
	  else echo "test-sdks needs: sudo apt-get install $(DEBIAN_SDK_PACKAGES)"; exit 1; fi; \
	fi
	$(PY) -m pytest -m debian_sdks tests/sdk/test_debian.py

unit: venv
	$(PY) -m pytest tests/unit

integration: venv
	$(PY) -m pytest tests/integration

# real kubectl and helm against the API emulator: install, bind, inject, upgrade, uninstall
userpath: venv
	$(PY) -m pytest tests/userpath

security: venv
	$(PY) -m pytest tests/security

# The integration and security tiers 5 times in a row while a CPU hog takes one core: a test
# that passes only on an idle machine is a bug in the test.
FLAKE_RUNS ?= 5
flake-check: venv
	@$(PY) -c "import time; end = time.time() + 7200; x = 0\nwhile time.time() < end: x += 1" & hog=$$!; \
	status=0; for i in $$(seq $(FLAKE_RUNS)); do \
	  echo "--- flake-check run $$i/$(FLAKE_RUNS) ---"; \
	  $(PY) -m pytest -q -p no:randomly tests/integration tests/security || { status=1; break; }; \
	done; kill $$hog; exit $$status

e2e: venv
	$(PY) -m pytest -m e2e tests/e2e

demo: venv
	$(PY) -m tests.harness.demo

# the demo, then everything left running: prints the `export KUBECONFIG=...` line
playground: venv
	$(PY) -m tests.harness.demo --keep

lint: venv
	$(VENV)/bin/ruff check operator tests scripts bench
	$(VENV)/bin/ruff format --check operator tests scripts bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

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
