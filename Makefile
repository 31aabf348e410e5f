# cilia — the two commands a newcomer needs: `make demo` and `make test`.
# Everything runs from a virtual environment in the clone (.venv), made with the system's own Python
# (PEP 668: Debian's and Ubuntu's Pythons refuse `pip install` outside one), as root too.
PY ?= python3
VENV ?= .venv
# The interpreter that creates the environment, found before .venv/bin goes first on PATH.
SYSPY := $(shell command -v $(PY) 2>/dev/null || echo $(PY))
VPY := $(CURDIR)/$(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.cilia-installed
# Where `make link` puts the `cilia` command.
BINDIR ?= $(if $(filter 0,$(shell id -u)),/usr/local/bin,$(HOME)/.local/bin)

.PHONY: setup setup-system demo test test-offline lint link bench bench-cli bench-datapath bench-node bench-l7 bench-cluster bench-diff bench-page clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-venv.sh
	bash scripts/setup-venv.sh $(SYSPY) $(VENV)
	touch $@

# System packages for the kernel datapath and the lab (root, Debian/Ubuntu).
setup-system:
	bash scripts/install-system-deps.sh

demo: setup setup-system
	$(VPY) -m cilia.demo

test: setup setup-system
	$(VPY) -m ruff check cilia tests bench
	bash scripts/run-tests.sh

# Tests that need neither root nor eBPF.
test-offline: setup
	$(VPY) -m pytest -q -m "not root"

lint: setup
	$(VPY) -m ruff check cilia tests bench

# Puts `cilia` on PATH (a link to .venv/bin/cilia; or run `. .venv/bin/activate`).
link: setup
	mkdir -p $(BINDIR)
	ln -sf $(CURDIR)/$(VENV)/bin/cilia $(BINDIR)/cilia
	@echo "cilia -> $(BINDIR)/cilia"

bench: setup
	$(VPY) bench/bench_all.py

# Start-up of `cilia --help`, `validate` and `trace` as ratios to `python -c pass` (no root needed).
bench-cli: setup
	$(VPY) bench/cli_bench.py

bench-datapath: setup setup-system
	$(VPY) bench/datapath_bench.py

bench-node: setup setup-system
	$(VPY) bench/node_bench.py

bench-l7: setup setup-system
	$(VPY) bench/l7_bench.py

# 1,000 pods on 3 nodes (etcd): policy change → every node's kernel map; under the lab's cluster lock.
bench-cluster: setup setup-system
	flock /tmp/cilia-cluster.lock $(VPY) bench/cluster_policy_bench.py

# `cilia diff` at 10,000 pods (one policy added), and the html page of 10,000 pods in headless Chromium.
bench-diff: setup
	$(VPY) bench/diff_bench.py --pods 10000 --namespaces 200 --policies 1000

bench-page: setup setup-system
	$(VPY) bench/page_bench.py

clean:
	rm -rf build dist *.egg-info .pytest_cache $(VENV)
