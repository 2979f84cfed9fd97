"""Benchmark helpers: a results table printed at the end of ``pytest benchmarks/``."""

import time

import pytest

RESULTS: list[dict] = []


def best_time(fn, repeats: int = 2) -> float:
    """Best wall time (s) of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.fixture
def record(benchmark):
    """Store throughput numbers in the benchmark's extra_info and in the summary table."""

    def _record(case: str, **metrics):
        benchmark.extra_info.update(metrics)
        RESULTS.append({"case": case, **metrics})

    return _record


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("pettk throughput")
    for row in RESULTS:
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "case"]
        terminalreporter.write_line(f"{row['case']:<42} " + "  ".join(parts))
