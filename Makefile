# The README's two commands. Both set everything up first (scripts/setup.sh is idempotent).
.PHONY: setup demo test lint ui-screenshots

setup:
	bash scripts/setup.sh $(if $(V),-v)

# The main job: a small joint search on the embedded defaults (local Ray, SQLite MLflow), then the Pareto front.
demo: setup
	.venv/bin/spfde search --config configs/demo_search.yaml --space smoke --num-samples 8 --max-concurrent 2 --name demo-$$(date +%Y%m%d-%H%M%S)

# docs/ui-runs.png and docs/ui-chart.png: a small real search in a temporary folder, served by `spfde ui`, taken in
# headless Chromium (Debian's `chromium`); never run by the tests (it writes into docs/).
ui-screenshots: setup
	.venv/bin/python -m spfde_search.tracking.screenshots

lint: setup
	.venv/bin/ruff check spfde_search search_spaces trainables tests benchmarks
	.venv/bin/mypy

# three pytest workers on two cores: the searches the tests run mostly wait (Ray starting, a driver killed and
# resumed), so a third worker fills their gaps; an idle worker takes tests from a busy one's queue (worksteal)
test: lint
	.venv/bin/python -m pytest -q -n 3 --dist worksteal --durations=15
