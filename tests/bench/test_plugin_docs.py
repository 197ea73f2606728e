"""docs/plugins.md's worked example, taken from the page, works from a folder outside the
repository: validate (with the preflight) accepts it, the fusion option reaches the module."""
import re
from pathlib import Path

from bench.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_documented_fusion_plugin_validates_from_outside_the_repository(tmp_path, capsys):
    text = DOC.read_text()
    fusion = re.search(r"`~/experiments/my_fusion.py`:\n\n```python\n(.*?)```", text, re.S)[1]
    suite, override = re.findall(r"```yaml\n(.*?)```", text, re.S)[:2]
    (tmp_path / "my_fusion.py").write_text(fusion)
    suite += override + "train: {iterations: 1, batch_size: 2}\n"
    (tmp_path / "gated.yaml").write_text(suite)
    assert main(["validate", str(tmp_path / "gated.yaml")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "preflight:" in out and "dualcnn/nano/gated_add/" in out
    # the option given to every fusion is refused on `add`, at grid.fusions[1]
    (tmp_path / "all.yaml").write_text(
        suite.replace("train: {", "train: {model_kwargs: {fusion_kwargs: {init_gate: 1.0}}, "))
    assert main(["validate", str(tmp_path / "all.yaml")]) == 2
    assert "grid.fusions[1]" in capsys.readouterr().err

    import models

    module = models.create_fusion("gated_add", [4, 8], init_gate=1.0)
    assert [g.detach().flatten()[0].item() for g in module.gates] == [1.0, 1.0]
