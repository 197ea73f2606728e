"""`ssmbench doctor`: every section, every scan backend with a state, the storage of a suite,
exit 0 with a summary line, also when the storage is unreachable."""
from bench.cli import main

SUITE = """\
name: doctor_toy
grid: {models: [dualcnn], sizes: [nano], datasets: [{name: synrgbx}]}
"""


def test_doctor_prints_every_backend_and_a_summary(tmp_path, capsys):
    import kernels

    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    assert main(["doctor", str(suite), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    for section in ("[environment]", "[threads]", "[cuda]", "[scan]", "[storage]"):
        assert section in out
    for name in kernels.list_backends():
        assert f"backend {name} " in out
    assert "mamba_ssm" in out and "causal_conv1d" in out
    assert "study.journal" in out and "doctor_toy" in out
    assert out.strip().splitlines()[-1].startswith("doctor: ")


def test_doctor_reports_an_unreachable_storage_and_still_exits_0(tmp_path, capsys):
    url = "postgresql://nobody@127.0.0.1:1/none"
    assert main(["doctor", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "cannot be opened" in out and out.rstrip().endswith("STORAGE NOT REACHABLE")
