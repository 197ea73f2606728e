"""bench/diagnostics/gpu_check.py on the CPU: the scan comparison finds a wrong gradient, the bf16
step check records the scan's dtype, latency rows for the seed systems at CPU scale, the table
writer, and a clean exit with a message where there is no CUDA device."""
import functools

import pytest
import torch

import kernels
from bench.diagnostics import gpu_check
from bench.diagnostics.gpu_check import Table


def test_scan_comparison_passes_for_two_correct_scans_and_catches_a_wrong_gradient():
    ref = functools.partial(kernels.selective_scan, backend="ref")
    ours = functools.partial(kernels.selective_scan, backend="torch")
    shape = dict(batch=1, dim=4, length=16, dstate=3)
    table = gpu_check.compare_scan(ref, ours, device="cpu", **shape)
    names = [r.name for r in table.rows]
    assert names == ["out", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"]
    assert not table.failed

    class WrongDGrad(torch.autograd.Function):  # D's gradient doubled, the rest exact
        @staticmethod
        def forward(ctx, D):
            return D.view_as(D)

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    def wrong(u, delta, A, B, C, D, **kw):
        return ref(u, delta, A, B, C, WrongDGrad.apply(D), **kw)

    failed = gpu_check.compare_scan(ref, wrong, device="cpu", **shape).failed
    assert [r.name for r in failed] == ["dD"]


def test_scan_check_falls_back_to_ref_without_mamba_ssm():
    table = gpu_check.scan_check(Table(), "cpu", batch=1, dim=4, length=8, dstate=2)
    assert table.rows[0].name == "mamba_ssm" and table.rows[0].value == "unavailable"
    assert all(r.name.startswith("ref vs ours") for r in table.rows[1:]) and not table.failed


def test_bf16_training_steps_record_losses_and_scan_dtype():
    table = gpu_check.bf16_training_check(Table(), "cpu", size="nano", input_size=(32, 32),
                                          steps=2, batch=2)
    losses, dtype = table.rows
    assert losses.ok and len(losses.value.split(", ")) == 2
    # under CPU autocast the projections give bf16; the scan's recurrence runs in fp32
    assert dtype.value == "bfloat16 in, float32 recurrence" and dtype.ok


def test_latency_rows_for_every_seed_system_at_cpu_scale():
    table = gpu_check.latency_check(Table(), "cpu", systems=gpu_check.SMALL_SYSTEMS,
                                    warmup=1, samples=2)
    assert [r.name for r in table.rows] == [f"{m}_nano" for m, *_ in gpu_check.SMALL_SYSTEMS]
    assert {m for m, *_ in gpu_check.PAPER_SYSTEMS} == {m for m, *_ in gpu_check.SMALL_SYSTEMS}
    assert not table.failed, [r.detail for r in table.failed]
    assert all(r.value.endswith(" ms") and float(r.value[:-3]) > 0 for r in table.rows)


def test_table_markdown_and_file(tmp_path):
    table = Table()
    table.add("scan", "out", True, "1.0e-07", "B1 D4")
    table.add("torchrun", "1 process", False, "no cell", "exit 1: a|b")
    table.add("latency", "sigma_tiny", None, "12.00 ms")
    path = table.write(tmp_path / "out" / "README.md", "GPU check: test")
    text = path.read_text()
    assert text.startswith("# GPU check: test\n")
    assert "| scan | out | pass | 1.0e-07 | B1 D4 |" in text
    assert "| torchrun | 1 process | FAIL | no cell | exit 1: a/b |" in text
    assert "| latency | sigma_tiny | – | 12.00 ms |  |" in text
    assert text.rstrip().endswith("3 rows, 1 failed.")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_it_says_so_and_exits_cleanly(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().out and not out.exists()
    assert gpu_check.main(["--require-gpu"]) == 2


@pytest.mark.slow
def test_torchrun_cell_on_the_cpu_is_recorded_once():
    """The torchrun row with gloo on the CPU (NCCL on a GPU): one process, one COMPLETE cell."""
    row, = gpu_check.torchrun_check(Table(), "cpu").rows
    assert row.ok and row.value == "COMPLETE", row.detail
