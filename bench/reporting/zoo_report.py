"""The model-zoo report: published vs measured parameters and FLOPs of every reproduced system,
written to ``reports/model_zoo/README.md``.

    python -m bench.reporting.zoo_report                    # measure every row, write the README
    python -m bench.reporting.zoo_report --systems Sigma-T  # re-measure some rows; the others
                                                            # from reports/model_zoo/measured.json
    python -m bench.reporting.zoo_report --check            # exit 1 if a row is off tolerance

Registry-driven: a row is one system's ``models.PublishedFigures``, registered beside its
builder in models/zoo/ (the input shapes of the published measurement, the published parameter
count and FLOPs per convention, the source, a tolerance); the rows come in the registry's
order. FLOPs go through the harness's profiler (``bench.profiling.flops``, fvcore, the scan
replaced by its shape-only backend) in the conventions of kernels/flops.py: ``published`` (the
scan not counted), ``full`` (9·B·L·D·N + B·D·L) and, for the systems that publish it, ``ref``
(VMamba's older ``flops_selective_scan_ref``). All in GMACs (fvcore counts a multiply-add as
one FLOP, as every paper here).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from models.registry import PublishedFigures

REPORT_PATH = Path("reports/model_zoo/README.md")
#: measurements of every row, so that measuring some rows re-renders the whole table
MEASURED_PATH = Path("reports/model_zoo/measured.json")


def entries() -> list[PublishedFigures]:
    """The report's rows: every registered system with a published measurement's inputs."""
    import models

    return [figures for figures in models.list_published() if figures.inputs]


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


def build(entry: PublishedFigures) -> nn.Module:
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


# ----------------------------------------------------------------------------- measuring


def measure(entry: PublishedFigures, flops: bool = True, seed: int = 0) -> dict[str, Any]:
    """Parameters and GMACs (every convention the entry publishes, plus published / full)."""
    from bench.profiling.flops import count_flops, flop_analysis

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
            out["gmacs"]["ref"] = count_flops(model, inputs, "ref")[0] / 1e9
    out["seconds"] = time.perf_counter() - start
    return out


def deviations(entry: PublishedFigures, measured: dict[str, Any]) -> dict[str, float]:
    """Relative deviation measured/published - 1 per quantity ("params", "gmacs_<conv>")."""
    dev = {}
    if entry.params_m:
        dev["params"] = measured["params_m"] / entry.params_m - 1
    for conv, pub in entry.gmacs.items():
        if conv in measured["gmacs"]:
            dev[f"gmacs_{conv}"] = measured["gmacs"][conv] / pub - 1
    return dev


def within_tolerance(entry: PublishedFigures, measured: dict[str, Any]) -> bool:
    return all(abs(v) <= (entry.tol_params if k == "params" else entry.tol_flops)
               for k, v in deviations(entry, measured).items())


def verdict(entry: PublishedFigures, measured: dict[str, Any]) -> str:
    """The row's "ok" cell: yes / **no** against the published figures, or "—" when nothing
    was published to compare against (a measurement, not a check)."""
    if not deviations(entry, measured):
        return "— (nothing published)"
    return "yes" if within_tolerance(entry, measured) else "**no**"


def reconstructed_note(entry: PublishedFigures, measured: dict[str, Any]) -> str | None:
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


def render(rows: list[tuple[PublishedFigures, dict[str, Any]]]) -> str:
    lines = [
        "# Model zoo: published vs measured",
        "",
        "Generated by `python -m bench.reporting.zoo_report` (bench/reporting/zoo_report.py); "
        "do not edit by hand.",
        "Parameters are counted on the built model; FLOPs through the harness's profiler "
        "(`bench.profiling.flops.flop_analysis`, fvcore, one trace, the selective scan on its "
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


def select(names: list[str] | None) -> list[PublishedFigures]:
    if not names:
        return entries()
    known = {e.system: e for e in entries()}
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
    parser = argparse.ArgumentParser(prog="python -m bench.reporting.zoo_report",
                                     description=__doc__,
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
        selected = select(args.systems)
        measured = load_measured(Path(args.measured))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    for entry in [] if args.render_only else selected:
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
    rows = [(entry, measured.get(entry.system)) for entry in entries()]
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
