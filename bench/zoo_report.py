"""The model-zoo report: published vs measured parameters and FLOPs of every reproduced system,
written to ``reports/model_zoo/README.md``.

    python -m bench.zoo_report                      # measure every row, write the README
    python -m bench.zoo_report --systems Sigma-T    # re-measure some rows; the others come
                                                    # from reports/model_zoo/measured.json
    python -m bench.zoo_report --check              # exit 1 if a row is off its tolerance

Table-driven: a system is one ``ZooEntry`` in ``ZOO`` (its builder, the input shapes of the
published measurement, the published parameter count and FLOPs per convention, the source, a
tolerance). FLOPs go through the harness's profiler (``bench.profile_flops.flop_analysis``, one
fvcore trace, the scan replaced by its shape-only backend) in its conventions:

    published  the scan not counted (the seed repositories' ``flops()``)
    full       the scan as 9·B·L·D·N + B·D·L (VMamba's ``flops_selective_scan_fn``)
    ref        the scan as VMamba's older ``flops_selective_scan_ref`` (numpy ``einsum_path``
               MAC counts of the reference loop: 3.5·B·L·D·N + B·D·L, 3.5625·B·L·D·N at
               N = 16); VMamba's early published FLOPs (4.46G for VMamba-T) used it

All in GMACs (fvcore counts a multiply-add as one FLOP, as every paper here).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

REPORT_PATH = Path("reports/model_zoo/README.md")
#: measurements of every row, so that measuring some rows re-renders the whole table
MEASURED_PATH = Path("reports/model_zoo/measured.json")


@dataclass
class ZooEntry:
    system: str
    #: a registered model ("sigma_tiny") or "module:function" for models outside the registry
    builder: str
    #: input name -> shape of the published measurement (batch included)
    inputs: dict[str, tuple[int, ...]]
    params_m: float | None
    #: convention -> published GMACs
    gmacs: dict[str, float] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    #: relative tolerances (parameters, FLOPs)
    tol_params: float = 1e-3
    tol_flops: float = 1e-2
    #: parameter-name prefixes not counted: training-only parts (auxiliary heads) that the
    #: published inference counts leave out
    exclude_params: tuple[str, ...] = ()
    #: module name -> parameter-name prefixes of modules the upstream code uses but never
    #: defines, so ssmbench's are reconstructions (counted in the row, and named beside it)
    reconstructed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def input_text(self) -> str:
        return " + ".join("×".join(str(s) for s in shape[1:]) for shape in self.inputs.values())


_SIGMA_IN = {"rgb": (1, 3, 480, 640), "x": (1, 3, 480, 640)}
_SIGMA_SRC = "specs/models.md §1 (fvcore as Sigma's EncoderDecoder.flops(), 9-class head)"
_VMAMBA_SRC = "specs/models.md §0 (VMamba v0 2024-02 checkpoints, 1000-class head)"
_VMAMBA_V2_SRC = ("VMamba README (MzeroMiko/VMamba): v2 classification models, 1000-class head, "
                  "figures rounded; configs vmambav2_{tiny,small,base}_224.yaml")

#: one row per reproduced system; other systems append their rows here
ZOO: list[ZooEntry] = [
    ZooEntry("VMamba-T", "models.zoo.vmamba:vmamba_cls_tiny", {"image": (1, 3, 224, 224)},
             22.89, {"published": 3.71, "ref": 4.46, "full": 5.63}, source=_VMAMBA_SRC),
    ZooEntry("VMamba-S", "models.zoo.vmamba:vmamba_cls_small", {"image": (1, 3, 224, 224)},
             44.42, {"published": 7.74, "ref": 9.11, "full": 11.23}, source=_VMAMBA_SRC),
    ZooEntry("VMamba-B", "models.zoo.vmamba:vmamba_cls_base", {"image": (1, 3, 224, 224)},
             76.25, {"published": 13.36, "ref": 15.19, "full": 18.02}, source=_VMAMBA_SRC),
    # v2 (forward "v05_noz"): README figures rounded to 1M / 0.1G, hence 1 % tolerances
    ZooEntry("VMamba-T v2 [s2l5]", "models.zoo.vmamba:vmamba_cls_v2_tiny",
             {"image": (1, 3, 224, 224)}, 31.0, {"full": 4.9}, source=_VMAMBA_V2_SRC,
             tol_params=0.02, tol_flops=0.02),
    ZooEntry("VMamba-S v2 [s2l15]", "models.zoo.vmamba:vmamba_cls_v2_small",
             {"image": (1, 3, 224, 224)}, 50.0, {"full": 8.7}, source=_VMAMBA_V2_SRC,
             tol_params=0.02, tol_flops=0.02),
    ZooEntry("VMamba-B v2 [s2l15]", "models.zoo.vmamba:vmamba_cls_v2_base",
             {"image": (1, 3, 224, 224)}, 89.0, {"full": 15.4}, source=_VMAMBA_V2_SRC,
             tol_params=0.02, tol_flops=0.02),
    ZooEntry("Sigma-T", "sigma_tiny", _SIGMA_IN, 48.29, {"published": 89.49, "full": 118.4},
             kwargs={"num_classes": 9}, source=_SIGMA_SRC),
    ZooEntry("Sigma-S", "sigma_small", _SIGMA_IN, 69.81, {"published": 138.88, "full": 187.0},
             kwargs={"num_classes": 9}, source=_SIGMA_SRC),
    ZooEntry("Sigma-B", "sigma_base", _SIGMA_IN, 121.42, {"published": 240.67, "full": 304.8},
             kwargs={"num_classes": 9}, source=_SIGMA_SRC),
    ZooEntry("Samba", "samba_base", {"rgb": (1, 3, 512, 512)}, 51.86, {"published": 236.0},
             kwargs={"num_classes": 7}, exclude_params=("aux_head.",), tol_params=0.01,
             source="specs/models.md §5 (UperNet at 512², 7 classes, inference: the auxiliary "
                    "FCN head is not counted; the ~236G is the spec's estimate)"),
    ZooEntry("MS2MNet", "ms2mnet_base", {"rgb": (1, 3, 256, 256), "x": (1, 1, 256, 256)}, None,
             exclude_params=("head.aux_head",),
             reconstructed={"VFE": ("fusion.vfe.",), "ASAF": ("head.fuse",), "DFE": ("dfe.",)},
             source="specs/models.md §2 (thop on RGB 1×3×256² + DSM 1×1×256²; the paper gives "
                    "no values, so only ours are listed)"),
    ZooEntry("Mamba-Diffusion backbone",
             "models.zoo.mamba_diffusion:mamba_diffusion_backbone",
             {"rgb": (1, 4, 256, 256), "x": (1, 1, 256, 256)}, 410.3, tol_params=0.01,
             source="specs/models.md §3 ([computed] from the upstream classes, counting "
                    "upstream's unused fusion projections; no FLOPs published)"),
]


class _SingleInput(nn.Module):
    """Adapts a one-tensor model (an image classifier) to the harness's inputs-dict call."""

    def __init__(self, model: nn.Module, key: str):
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(inputs[self.key])


def count_params(model: nn.Module, exclude: tuple[str, ...] = ()) -> int:
    if isinstance(model, _SingleInput):
        model = model.model
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude))


def build(entry: ZooEntry) -> nn.Module:
    """The entry's model, ready for the harness (an inputs dict in, logits out), in eval mode."""
    import models

    if ":" in entry.builder:
        module, fn = entry.builder.split(":")
        model = getattr(importlib.import_module(module), fn)(**entry.kwargs)
    else:
        model = models.create_model(entry.builder, **entry.kwargs)
    if len(entry.inputs) == 1 and not getattr(model, "modalities", None):
        model = _SingleInput(model, next(iter(entry.inputs)))
    return model.eval()


# ----------------------------------------------------------------------------- the ref formula


@functools.lru_cache(maxsize=None)
def _einsum_macs(equation: str, *shapes: tuple[int, ...]) -> float:
    """numpy's optimal-path FLOP count halved and floored (fvcore's / VMamba's MAC convention)."""
    arrays = [np.broadcast_to(np.zeros(()), s) for s in shapes]  # shapes only, no memory
    report = np.einsum_path(equation, *arrays, optimize="optimal")[1]
    for line in report.split("\n"):
        if "optimized flop" in line.lower():
            return float(np.floor(float(line.split(":")[-1]) / 2))
    raise RuntimeError(f"numpy.einsum_path gave no FLOP count for {equation}")


def selective_scan_flops_ref(B: int, L: int, D: int, N: int, with_D: bool = True,
                             with_z: bool = False) -> float:
    """VMamba's ``flops_selective_scan_ref`` (grouped B / C): the MACs of the reference loop's
    einsums (deltaA, deltaB_u, and per step the state update plus the C read-out) + B·D·L for
    D (+ B·D·L for z)."""
    flops = _einsum_macs("bdl,dn->bdln", (B, D, L), (D, N))
    flops += _einsum_macs("bdl,bnl,bdl->bdln", (B, D, L), (B, N, L), (B, D, L))
    flops += L * (B * D * N + _einsum_macs("bdn,bdn->bd", (B, D, N), (B, D, N)))
    flops += B * D * L * (int(with_D) + int(with_z))
    return flops


def _ref_handle(inputs, outputs) -> float:
    import kernels

    s = kernels.flops.scan_shape_from_inputs(inputs)
    return selective_scan_flops_ref(s["B"], s["L"], s["D"], s["N"], s["with_D"], s["with_z"])


def count_gmacs_ref(model: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """GMACs with the scan counted by the ``ref`` formula (one fvcore trace)."""
    import kernels
    from bench.profile_flops import _analysis

    with kernels.scan_backend("shape"), torch.no_grad():
        analysis = _analysis(model, inputs, "published")
        analysis.set_op_handle(**{kernels.flops.SCAN_OP: _ref_handle})
        return analysis.total() / 1e9


# ----------------------------------------------------------------------------- measuring


def measure(entry: ZooEntry, flops: bool = True, seed: int = 0) -> dict[str, Any]:
    """Parameters and GMACs (every convention the entry publishes, plus published / full)."""
    from bench.profile_flops import flop_analysis

    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build(entry)
    out: dict[str, Any] = {"system": entry.system,
                           "params_m": count_params(model, entry.exclude_params) / 1e6,
                           "gmacs": {}}
    if entry.reconstructed:
        inner = model.model if isinstance(model, _SingleInput) else model
        out["reconstructed_params_m"] = {
            name: sum(p.numel() for n, p in inner.named_parameters() if n.startswith(prefixes))
            / 1e6 for name, prefixes in entry.reconstructed.items()}
    if flops:
        gen = torch.Generator().manual_seed(seed)
        inputs = {k: torch.randn(*s, generator=gen) for k, s in entry.inputs.items()}
        analysis = flop_analysis(model, inputs, conventions=("published", "full"), depth=2)
        out["gmacs"].update(analysis["gmacs"])
        wrapped = isinstance(model, _SingleInput)
        top = {}
        for name, gmacs in analysis["by_module"].items():
            name = name.removeprefix("model.") if wrapped else name
            if name and "." not in name and not (wrapped and name == "model"):
                top[name] = gmacs
        out["by_module"] = top
        out["unsupported_ops"] = analysis["unsupported_ops"]
        if "ref" in entry.gmacs:
            out["gmacs"]["ref"] = count_gmacs_ref(model, inputs)
    out["seconds"] = time.perf_counter() - start
    return out


def deviations(entry: ZooEntry, measured: dict[str, Any]) -> dict[str, float]:
    """Relative deviation measured/published - 1 per quantity ("params", "gmacs_<conv>")."""
    dev = {}
    if entry.params_m:
        dev["params"] = measured["params_m"] / entry.params_m - 1
    for conv, pub in entry.gmacs.items():
        if conv in measured["gmacs"]:
            dev[f"gmacs_{conv}"] = measured["gmacs"][conv] / pub - 1
    return dev


def within_tolerance(entry: ZooEntry, measured: dict[str, Any]) -> bool:
    return all(abs(v) <= (entry.tol_params if k == "params" else entry.tol_flops)
               for k, v in deviations(entry, measured).items())


def verdict(entry: ZooEntry, measured: dict[str, Any]) -> str:
    """The row's "ok" cell: yes / **no** against the published figures, or "—" when nothing
    was published to compare against (a measurement, not a check)."""
    if not deviations(entry, measured):
        return "— (nothing published)"
    return "yes" if within_tolerance(entry, measured) else "**no**"


def reconstructed_note(entry: ZooEntry, measured: dict[str, Any]) -> str | None:
    """"VFE 29.21M + ASAF 3.52M + DFE 0.00M = 32.73M of 51.66M (63.4 %)", or None."""
    measured_parts = measured.get("reconstructed_params_m") or {}
    if not measured_parts:
        return None
    parts = {k: measured_parts[k] for k in entry.reconstructed if k in measured_parts}
    share = sum(parts.values())
    return (" + ".join(f"{k} {v:.2f}M" for k, v in parts.items())
            + f" = {share:.2f}M of {measured['params_m']:.2f}M "
              f"({100 * share / measured['params_m']:.1f} %)")


# ----------------------------------------------------------------------------- rendering


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def render(rows: list[tuple[ZooEntry, dict[str, Any]]]) -> str:
    lines = [
        "# Model zoo: published vs measured",
        "",
        "Generated by `python -m bench.zoo_report` (bench/zoo_report.py); do not edit by hand.",
        "Parameters are counted on the built model; FLOPs through the harness's profiler "
        "(`bench.profile_flops.flop_analysis`, fvcore, one trace, the selective scan on its "
        "shape-only backend), in GMACs (one multiply-add = one FLOP, the papers' convention).",
        "",
        "FLOP conventions: **published**: the selective scan and element-wise ops not counted "
        "(the seed repositories' `flops()`; Sigma's autograd functions are missing from its "
        "handle table, so fvcore skipped the scan); **full**: the scan counted as 9·B·L·D·N + "
        "B·D·L (VMamba's `flops_selective_scan_fn`, state-spaces/mamba#110); **ref**: VMamba's "
        "older `flops_selective_scan_ref` (3.5·B·L·D·N + B·D·L), behind its early "
        "published numbers. Cross-scan / cross-merge are data movement (0) in all three. "
        "Every convention counts every op that multiplies and adds: convolutions, linear "
        "layers, matmuls, attention (QKᵀ and AV, 2·Lq·Lk·d per batch·head), einsum (exactly); "
        "element-wise ops, softmax and reductions count 0.",
        "",
        "| system | input | params published | params measured | Δ | convention | "
        "GMACs published | GMACs measured | Δ | ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry, m in rows:
        if m is None:
            published = f"{entry.params_m:.2f}M" if entry.params_m else "—"
            lines.append(f"| {entry.system} | {entry.input_text()} | {published} | "
                         "not measured | | | | | | |")
            continue
        dev = deviations(entry, m)
        ok = verdict(entry, m)
        pub_p = f"{entry.params_m:.2f}M" if entry.params_m else "—"
        first = True
        # without published FLOPs, ours are listed in both conventions
        convs = list(entry.gmacs) or ["published", "full"]
        for conv in convs:
            cells_p = ["", "", ""]
            if first:
                cells_p = [pub_p, f"{m['params_m']:.2f}M",
                           _pct(dev["params"]) if "params" in dev else "—"]
            pub_f = f"{entry.gmacs[conv]:.2f}" if conv in entry.gmacs else "—"
            if conv not in m["gmacs"]:
                cells_f = [conv, pub_f, "not measured", "—"]
            else:
                cells_f = [conv, pub_f, f"{m['gmacs'][conv]:.2f}",
                           _pct(dev[f"gmacs_{conv}"]) if f"gmacs_{conv}" in dev else "—"]
            system = entry.system + (" †" if reconstructed_note(entry, m) else "")
            lines.append("| " + " | ".join([system if first else "",
                                            entry.input_text() if first else "", *cells_p,
                                            *cells_f, ok if first else ""]) + " |")
            first = False
    lines += ["", "Tolerances: parameters 0.1 %, FLOPs 1 % unless a row says otherwise. "
              "\"— (nothing published)\": no published figure to compare against; the row is "
              "a measurement, not a check.", ""]
    notes = [(e, reconstructed_note(e, m)) for e, m in rows if m is not None]
    notes = [(e, n) for e, n in notes if n]
    if notes:
        lines += ["† Reconstructed modules: the upstream release uses them but never defines "
                  "them, so ssmbench's are reconstructions (their parameters and FLOPs are in "
                  "the row, and no upstream number can check them):", ""]
        lines += [f"- {e.system}: {n}" for e, n in notes]
        lines.append("")
    lines += ["## Sources", ""]
    seen = []
    for entry, _ in rows:
        if entry.source and entry.source not in seen:
            seen.append(entry.source)
    lines += [f"- {s}" for s in seen]
    lines += ["", "## Where the FLOPs are (full convention, GMACs, per top-level module)", ""]
    for entry, m in rows:
        mods = (m or {}).get("by_module", {})
        if mods:
            # sorted: the cache stores them sorted, fvcore's own order varies between processes
            parts = ", ".join(f"{k} {v['full']:.2f}" for k, v in sorted(mods.items()))
            lines.append(f"- {entry.system}: {parts}")
    lines.append("")
    return "\n".join(lines)


def select(names: list[str] | None) -> list[ZooEntry]:
    if not names:
        return list(ZOO)
    known = {e.system: e for e in ZOO}
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(f"unknown system(s) {missing}; known: {', '.join(known)}")
    return [known[n] for n in names]


def load_measured(path: Path = MEASURED_PATH) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to measure every row "
                         "again") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zoo_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="*", help="rows to measure (default: all)")
    parser.add_argument("--out", default=str(REPORT_PATH), help="README path, or - for stdout")
    parser.add_argument("--measured", default=str(MEASURED_PATH),
                        help="JSON cache of the measurements (updated with the new rows)")
    parser.add_argument("--no-flops", action="store_true", help="parameters only")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing; render the README from the cached measurements")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a measured row is off its tolerance")
    args = parser.parse_args(argv)
    try:
        entries = select(args.systems)
        measured = load_measured(Path(args.measured))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    for entry in [] if args.render_only else entries:
        m = measure(entry, flops=not args.no_flops)
        print(f"{entry.system}: {m['params_m']:.3f}M, "
              + ", ".join(f"{k} {v:.2f}G" for k, v in m["gmacs"].items())
              + f" ({m['seconds']:.0f}s)", file=sys.stderr)
        if args.no_flops and entry.system in measured:
            m["gmacs"] = measured[entry.system].get("gmacs", {})
            m["by_module"] = measured[entry.system].get("by_module", {})
        measured[entry.system] = {**m, "torch": torch.__version__,
                                  "date": time.strftime("%Y-%m-%d")}
    Path(args.measured).parent.mkdir(parents=True, exist_ok=True)
    Path(args.measured).write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    rows = [(entry, measured.get(entry.system)) for entry in ZOO]
    text = render(rows)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.check and not all(within_tolerance(e, m) for e, m in rows if m is not None):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
