# SessionBERT: `make run` (set up, then materialize everything), `make test`, `make ui`, `make serve`,
# `make bench`, `make paper-report`, `make docs` (the documentation site), `make docs-serve`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 3000
export SESSIONBERT_HOME ?= $(CURDIR)/.sessionbert

.PHONY: setup run test ui lint clean paper-report bench serve docs docs-serve

setup: $(STAMP)

# torch first, from the CPU build on this disk (any other torch request pulls a CUDA build),
# then the project and its pinned dependency set; redone only when those files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/sessionbert run

test: setup
	$(BIN)/python -m pytest

ui: setup
	DAGSTER_HOME=$$($(BIN)/python -m sessionbert_assets.instance) $(BIN)/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

# the served model (after `make run`): persona and top-5 new services over HTTP (docs/serving.md)
SERVE_PORT ?= 5001
serve: setup
	$(BIN)/sessionbert serve --port $(SERVE_PORT) $(if $(SERVE_WORKERS),--workers $(SERVE_WORKERS))

# performance (benchmarks/perf.py): ceilings, MFU, padding, per-asset time and memory, scaling; BENCH_SECTIONS
# may add paper_data (the paper's 7.4M sessions through the data assets, about 30 min on 2 cores)
BENCH_PROFILE ?= small
BENCH_SECTIONS ?= ceilings pipeline training inference scaling
bench: setup
	$(BIN)/python -m benchmarks.perf --profile $(BENCH_PROFILE) --sections $(BENCH_SECTIONS)

# the paper's experiments (benchmarks/paper_report.py): reports/paper.md and reports/paper.json
REPORT_PROFILE ?= small
REPORT_SEEDS ?= 0 1 2
paper-report: setup
	$(BIN)/python -m benchmarks.paper_report --profile $(REPORT_PROFILE) --seeds $(REPORT_SEEDS)

# the documentation site (mkdocs.yml, docs/): --strict, so a broken link or a page missing from the nav fails;
# nothing is fetched while building (no fonts, no social cards)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d build/site

DOCS_PORT ?= 8000
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict -a 127.0.0.1:$(DOCS_PORT)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(SESSIONBERT_HOME)
