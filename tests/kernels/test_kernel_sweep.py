"""The ``kind: kernels`` suite path: a tiny sweep through the CLI writes the report files."""
import pandas as pd

from bench.cli import main

SUITE = """\
name: tiny_scan
kind: kernels
kernels:
  backends: [ref, torch, cpu]
  peers: [mambapy]
  threads: 1
  min_run_time: 0.01
  roofline_s: 0.01
  target_fwd: {B: 1, D: 16, L: 24, N: 4}
  target_fwdbwd: {B: 1, D: 16, L: 24, N: 4}
  shapes:
    - {B: 1, D: 16, L: 24, N: 4, modes: [fwd, fwdbwd]}
    - {B: 1, D: 16, L: 48, N: 4, G: 2, modes: [fwd]}
"""


def test_kernel_sweep_writes_report(tmp_path, cpu_kernel, capsys):
    suite = tmp_path / "tiny_scan.yaml"
    suite.write_text(SUITE)
    assert main([str(suite), "--reports-dir", str(tmp_path / "reports")],
                 default_command="run") == 0
    out = tmp_path / "reports" / "tiny_scan"
    frame = pd.read_csv(out / "results.csv")
    core = frame[frame.impl.isin(["ref", "torch", "cpu"])]
    assert sorted(map(tuple, core[["impl", "mode", "L"]].values.tolist())) == sorted(
        [(b, m, 24) for b in ("ref", "torch", "cpu") for m in ("fwd", "fwdbwd")]
        + [(b, "fwd", 48) for b in ("ref", "torch", "cpu")])
    assert (core[core.impl != "ref"].err_vs_ref < 1e-4).all()
    assert (frame.ms > 0).all() and (frame.x_roof > 0).all()
    text = (out / "README.md").read_text()
    assert "## Headline checks" in text and "| 1 | 16 | 24 | 4 | 1 | cpu |" in text
    assert (out / "throughput_vs_length.png").stat().st_size > 1000
