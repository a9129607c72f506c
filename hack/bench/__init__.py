"""gpuctl's benchmarks (docs/benchmarks.md): `python -m bench.lifecycle`, `python -m bench.memory`.

Run from the repository root with `PYTHONPATH=hack` (or `make bench`). They are
tools, not tests: `make test` never runs them; `tests/unit/test_bench_*.py` only
checks their argument parsing and report formatting.
"""
