# cilia — the two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
PIP ?= $(PY) -m pip

.PHONY: setup setup-system demo test test-offline lint bench bench-datapath bench-node bench-cluster clean

setup:
	$(PIP) install -q -e '.[dev]'

# System packages for the kernel datapath and the lab (root, Debian/Ubuntu).
setup-system:
	bash scripts/install-system-deps.sh

demo: setup setup-system
	$(PY) -m cilia.demo

test: setup setup-system
	$(PY) -m ruff check cilia tests bench
	bash scripts/run-tests.sh

# Tests that need neither root nor eBPF.
test-offline: setup
	$(PY) -m pytest -q -m "not root"

lint: setup
	$(PY) -m ruff check cilia tests bench

bench: setup
	$(PY) bench/bench_all.py

bench-datapath: setup setup-system
	$(PY) bench/datapath_bench.py

bench-node: setup setup-system
	$(PY) bench/node_bench.py

# 1,000 pods on 3 nodes (etcd): policy change → every node's kernel map; under the lab's cluster lock.
bench-cluster: setup setup-system
	flock /tmp/cilia-cluster.lock $(PY) bench/cluster_policy_bench.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
