# Convenience targets; the README's two commands are ./run.sh and ./test.sh.
.PHONY: run test bench lint
run:
	./run.sh
test:
	./test.sh
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
bench:
	.venv/bin/python -m loadtests.forecast_bench
