"""`ssmbench profile SUITE`: only the profile stage runs, results land in the store and the
report; the harness adds little time per cell over the measured calls."""
import statistics
import time

from bench.cli import main
from bench.results.store import CellStore
from tests.helpers.suites import TOY_SUITE

TEN_CELLS = """\
name: toy10
plugins: [TOY_PLUGIN]
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [rgb_only, x_only, add, concat_conv, early_concat]
  datasets: [{name: toy_rgbx}]
  seeds: [0, 1]
stages: [profile]
train: {threads: 1}
profile: {warmup: 2, warmup_s: 0.1, samples: 30, min_time_s: 0.4, max_time_s: 0.6,
          input_size: [32, 32], threads: 1}
"""


def _profile(path, tmp_path, *extra):
    return main(["profile", str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir",
                 str(tmp_path / "reports"), "--no-progress", *extra])


def test_profile_command_runs_only_the_profile_stage(write_suite, tmp_path, capsys):
    path = write_suite(TOY_SUITE)
    assert _profile(path, tmp_path) == 0
    assert "2 cell(s) run now" in capsys.readouterr().out
    store = CellStore("toy-profile", None, tmp_path / "runs")
    results = store.latest_results()
    assert len(results) == 2
    for trial in results:
        attrs = trial.user_attrs
        assert trial.state.name == "COMPLETE"
        assert "metrics" not in attrs and "history" not in attrs
        profile = attrs["profile"]
        assert profile["latency_samples"] == 3 and profile["gmacs_full"] > 0
        assert profile["unsupported_ops"] == {}
    report = (tmp_path / "reports" / "toy-profile" / "README.md").read_text()
    assert "GMACs published" in report and "Latency ms" in report
    assert "## Profile" in report and "### Profile settings" in report
    assert "dualcnn/nano/add" in report and "process peak RSS" in report
    # its own title and its own command, not the trained suite's
    assert report.startswith("# Profile: ") and f"by `ssmbench profile {path}`" in report
    assert not list((tmp_path / "runs").glob("**/checkpoint.pt"))


def test_profile_gate_fails_the_cell(write_suite, tmp_path, capsys, monkeypatch):
    import bench.profiling.flops as flops

    # take the handle of convolutions away: every conv becomes an op without a handle
    original = flops._analysis

    def without_conv(model, inputs, convention):
        analysis = original(model, inputs, convention)
        analysis._op_handles.pop("aten::_convolution", None)
        return analysis

    monkeypatch.setattr(flops, "_analysis", without_conv)
    path = write_suite(TOY_SUITE)
    assert _profile(path, tmp_path) == 1
    err = capsys.readouterr().err
    assert "without a FLOP handle" in err and "aten::_convolution" in err
    store = CellStore("toy-profile", None, tmp_path / "runs")
    failed = [t for t in store.latest_results() if t.state.name == "FAIL"]
    assert len(failed) == 2 and failed[0].user_attrs["profile"]["gmacs_full"] >= 0


def test_harness_overhead_per_cell(write_suite, tmp_path):
    """Ten cells: the profile stage's wall time against the time inside the measured calls
    (FLOP trace, timed forwards, memory). The report states the measured figures; this bound
    is generous because the machine is shared."""
    path = write_suite(TEN_CELLS)
    start = time.perf_counter()
    assert _profile(path, tmp_path) == 0
    suite_wall = time.perf_counter() - start
    store = CellStore("toy10", None, tmp_path / "runs")
    results = store.latest_results()
    assert len(results) == 10
    stage = [t.user_attrs["timing"]["profile_s"] for t in results]
    measured = [t.user_attrs["profile"]["timing"]["measured_s"] for t in results]
    per_cell = sorted((s - m) / s for s, m in zip(stage, measured))
    # the median cell: one cell descheduled between two measured blocks on a shared machine
    # must not fail the test
    assert statistics.median(per_cell) < 0.05, per_cell
    assert suite_wall > sum(measured)


def test_profile_repro_compares_two_fresh_runs(write_suite, tmp_path, capsys):
    """`ssmbench profile-repro`: two `ssmbench profile` processes, one table; the exit code
    says whether every cell's runs agree within the tolerance."""
    from bench.profiling.latency_repro import compare_runs

    path = write_suite(TOY_SUITE)
    code = main(["profile-repro", str(path), "--runs-dir", str(tmp_path / "runs"),
                 "--reports-dir", str(tmp_path / "reports"), "--no-progress",
                 "--tolerance", "100"])
    assert code == 0
    table = (tmp_path / "reports" / "toy" / "latency_repro.md").read_text()
    assert "2 back-to-back `ssmbench profile` processes" in table
    assert "dualcnn/nano/add/toy_rgbx/seed0" in table and "2 of 2 cells within it" in table
    runs = [tmp_path / "runs" / "toy-repro" / f"run{i}" for i in (1, 2)]
    frame = compare_runs("toy-profile", runs, tolerance=100)
    stored = [CellStore("toy-profile", None, d).latest_results() for d in runs]
    assert len(frame) == 2
    for _, row in frame.iterrows():
        medians = [next(t.user_attrs["profile"]["latency_ms_median"] for t in s
                        if t.user_attrs["label"] == row["cell"]) for s in stored]
        assert row["run 1 ms"] == round(medians[0], 3)
        assert row["run 2 ms"] == round(medians[1], 3)
        assert row["difference %"] == round((max(medians) / min(medians) - 1) * 100, 1)
    assert set(compare_runs("toy-profile", runs, tolerance=-1)["within"]) == {"no"}
    assert main(["profile-repro", str(path), "--runs", "1", "--runs-dir",
                 str(tmp_path / "runs")]) == 2
    assert "--runs must be at least 2" in capsys.readouterr().err
