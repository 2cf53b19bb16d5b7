"""The benchmark commands run (their timings are reported, never asserted)."""

import math
import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_pyro_overhead_benchmark_runs(tmp_path):
    module = runpy.run_path(str(ROOT / "benchmarks" / "overhead.py"))
    out = tmp_path / "overhead.json"
    result = module["main"](["--blocks", "1", "--steps", "2", "--variants", "erm,hand-pooled,probmix,mix", "--json", str(out)])
    assert set(result) == {"erm", "hand-pooled", "probmix", "mix"}
    assert all(math.isfinite(r["cpu_ratio"]) and r["cpu_us"] > 0 for r in result.values())
    assert out.exists()
