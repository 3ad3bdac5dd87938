# Every target sets up what it needs: a local virtualenv in .venv with the
# package (editable) and the dev dependency group.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: install demo test check lint typecheck generate bench docs interop soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group dev
	touch $@

install: $(STAMP)

## make demo: send mail with the sync and the async API (asyncio and trio)
demo: $(STAMP)
	$(BIN)/python examples/demo.py

## make test: the whole test suite, on asyncio, asyncio+uvloop and trio
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make check: lint, format, mypy --strict, generated facade up to date
check: lint typecheck
	$(BIN)/python -m anysmtp._codegen --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## make generate: regenerate the sync facade (anysmtp/_sync.py); run as a script
## so that it works even when a stale facade breaks `import anysmtp`
generate: $(STAMP)
	$(BIN)/python anysmtp/_codegen.py

## make bench: anysmtp against smtplib and aiosmtplib on Postfix's smtp-sink
## (installs postfix if missing; BENCH_ARGS=--quick or --full to rescale)
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group bench
	touch $@

bench: $(BENCH_STAMP)
	sh bench/install-smtp-sink.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## make soak: the soak test at full length, 20,000 messages per client
## (async API on asyncio, uvloop and trio, and the sync facade)
soak: $(STAMP)
	ANYSMTP_SOAK_MESSAGES=20000 $(BIN)/python -m pytest -m soak --timeout=900 tests $(PYTEST_ARGS)

## make interop: the client against private Postfix, Exim and Dovecot (LMTP and
## submission) on loopback
## (as root on Debian: installs them with apt-get; otherwise skipped with a message)
interop: $(STAMP)
	sh interop/run.sh $(BIN)/python $(PYTEST_ARGS)

## make docs: the Sphinx documentation in docs/_build/html (warnings are errors)
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group docs
	touch $@

docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -E -n -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache docs/_build
