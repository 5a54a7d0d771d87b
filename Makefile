# The two commands a newcomer types:
#   make quickstart   set up .venv (first time only) and generate the quickstart corpus into runs/quick
#   make test         set up .venv (first time only) and run the whole test suite
.PHONY: setup quickstart test test-all test-unit bench docs

setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/generator run recipes/quickstart.yaml --out runs/quick --force

# Two workers: one runs the integration tests (real engines, Ray, servers) one after another,
# the other unit tests; both share the unit tests left after that. One OpenMP thread each: an
# engine with two threads beside a busy worker waits at every step for its preempted thread.
test: setup
	OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=1800 -m "not slow" \
		-n 2 --dist loadgroup --durations=30

# Everything, with the long statistical runs on the real engine.
test-all: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=3600 -m "not integration" -n 2 --durations=10
	.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=3600 -m integration --durations=20

test-unit: setup
	.venv/bin/python -m pytest -q -m "not integration" -p no:cacheprovider

bench: setup
	.venv/bin/python bench/bench_pipeline.py

# The docs site (guides, and reference pages generated from the code) into site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site
