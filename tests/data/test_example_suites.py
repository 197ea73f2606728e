"""The example suites of the real datasets name registered datasets and valid data settings.

They are not run (the data cannot be downloaded here); this checks what bench/data owns in
them: dataset names and options, the augment dict, the protocol and the corruption names.
"""
import inspect
import json
from pathlib import Path

import pytest
import yaml

import bench.data as data
from bench.data.corruptions import parse_corruption
from bench.data.transforms import parse_augment
from bench.evaluation.protocols import describe

SUITES = Path(__file__).resolve().parents[2] / "suites"
REAL_SUITES = ["mfnet", "pst900", "nyudv2", "sunrgbd", "whu_opt_sar", "hunan", "vaihingen",
               "potsdam", "loveda", "refcoco"]
MODELS = {"mfnet": "sigma", "pst900": "sigma", "nyudv2": "sigma", "sunrgbd": "sigma",
          "whu_opt_sar": "mamba_diffusion", "hunan": "mamba_diffusion", "vaihingen": "ms2mnet",
          "potsdam": "ms2mnet", "loveda": "samba", "refcoco": "remamber"}


def merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def load_suite(path: Path) -> dict:
    suite = yaml.safe_load(path.read_text())
    if "base" in suite:
        suite = merged(load_suite(path.parent / suite.pop("base")), suite)
    return suite


def constructor_options(cls) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names


@pytest.mark.parametrize("stem", REAL_SUITES)
def test_example_suite_data_settings(stem):
    suite = load_suite(SUITES / f"{stem}.yaml")
    assert suite["grid"]["models"] == [MODELS[stem]]
    for dataset in suite["grid"]["datasets"]:
        cls = data.get_dataset_class(dataset["name"])
        assert dataset["root"].startswith("/data/")
        unknown = set(dataset) - {"name"} - constructor_options(cls)
        assert not unknown, f"{stem}: options {unknown} not accepted by {cls.__name__}"
        if "layout" in dataset:
            assert dataset["layout"] in cls.layouts
    parse_augment(suite["train"].get("augment"))
    assert describe(suite["eval"]["protocol"])
    for name in suite["eval"]["corruptions"]:
        parse_corruption(name)


@pytest.mark.parametrize("stem", REAL_SUITES)
def test_example_suite_validates_against_the_full_schema(stem, tmp_path, monkeypatch):
    """With its dataset roots pointed at an existing folder, each example suite passes the whole
    suite schema: registered model, size, fusion and dataset names, train / eval / profile keys,
    and expands to at least one cell of the paper's model. The empty folder is in no layout of
    the dataset: the suite is refused with the layouts and `ssmbench data convert` named, and
    accepted once the layout check is set aside."""
    import bench.config.checks
    from bench.config.suite import load_suite as load_validated
    from bench.config.yaml_source import SuiteError

    for path in SUITES.glob("_*.yaml"):  # shared bases, referenced by relative path
        (tmp_path / path.name).write_text(path.read_text())
    suite = yaml.safe_load((SUITES / f"{stem}.yaml").read_text())
    for dataset in suite["grid"]["datasets"]:
        dataset["root"] = str(tmp_path)
    copy = tmp_path / f"{stem}.yaml"
    copy.write_text(yaml.safe_dump(suite, sort_keys=False))
    if not any("layout" in d for d in suite["grid"]["datasets"]):  # a named layout is trusted
        with pytest.raises(SuiteError, match="ssmbench data convert") as refused:
            load_validated(copy)
        assert "grid.datasets[0].root" in str(refused.value) and "layout" in str(refused.value)
    monkeypatch.setattr(bench.config.checks, "check_root", lambda *args: [])
    cells = load_validated(copy).cells()
    assert cells and all(cell["model"] == MODELS[stem] for cell in cells)



def _trees():
    import tests.helpers.native_data as fx

    return {
        "mfnet": lambda root: fx.make_mfnet(root, layout="sigma", full_size=None),
        "pst900": lambda root: fx.make_pst900(root, full_size=False),
        "nyudv2": lambda root: fx.make_indoor(root, "nyudv2", layout="sigma", full_size=False),
        "sunrgbd": lambda root: fx.make_indoor(root, "sunrgbd", layout="sigma", full_size=False),
        "whu_opt_sar": fx.make_whu_mmseg,
        "hunan": fx.make_hunan_mmseg,
        "vaihingen": lambda root: fx.make_isprs_mmseg(root, full_size=False, names={
            "train": ["area1_0_0_512_512"], "val": ["area2_0_0_512_512"],
            "test": ["area3_0_0_512_512"]}),
        "potsdam": lambda root: fx.make_isprs_mmseg(root, full_size=False, names={
            "train": ["area1_0_0_512_512"], "val": ["area2_0_0_512_512"],
            "test": ["area3_0_0_512_512"]}),
        "loveda": fx.make_loveda,
    }


@pytest.mark.parametrize("stem", [s for s in REAL_SUITES if s != "refcoco"])
def test_example_suite_passes_the_preflight_on_a_tree_of_its_dataset(stem, tmp_path):
    """Each suite's models are built for its dataset's modalities and its splits are read, on a
    small tree in the dataset's layout (tests/helpers/native_data.py). LoveDA is RGB only: its
    Samba model is built from one modality (this used to fail every cell at model build)."""
    from bench.config.suite import load_suite as load_bench_suite
    from bench.run.preflight import preflight

    _trees()[stem](tmp_path / stem)
    raw = load_suite(SUITES / f"{stem}.yaml")
    datasets = [{**d, "root": str(tmp_path / stem)} for d in raw["grid"]["datasets"]]
    # the ImageNet backbone files are not here: init is dropped (the init check has its own
    # tests, tests/bench/test_checkpoints.py)
    overrides = [{**o, "set": {k: v for k, v in o["set"].items() if k != "init"}}
                 for o in raw.get("overrides", [])]
    overrides = [o for o in overrides if o["set"]]
    suite = load_bench_suite(SUITES / f"{stem}.yaml", [
        f"grid.datasets={json.dumps(datasets)}", "init=null",
        f"overrides={json.dumps(overrides)}"])
    summary = preflight(suite)
    assert summary.models + summary.meta_only >= 1 and summary.splits >= 2
