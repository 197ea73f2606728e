"""The report's "Initialisation" section: per cell, the weights it started from (the load report
stored by bench/run/checkpoints.py: loaded / missing / unexpected / mismatched tensors) and, for
the metrics the suite's ``report.published`` gives (``{sigma_tiny: {mIoU: 60.2}}``, or per
dataset ``{remamber_base/refcoco: {oIoU: 74.54}}``), the
published figure beside the measured one with the evaluation protocol named."""
from __future__ import annotations

from pathlib import Path

#: metrics a suite may publish per model_size (read from the clean test split)
PUBLISHED_METRICS = ("mIoU", "mF1", "aAcc", "mAcc", "kappa", "oIoU", "P@0.5", "P@0.9")


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


def init_rows(store, spec, ids: set[str] | None = None) -> list[dict]:
    """One row per finished cell with an init or a published metric."""
    rows = []
    for trial in store.latest_results():
        if trial.state.name != "COMPLETE":
            continue
        attrs = trial.user_attrs
        config = attrs["config"]
        if ids is not None and config["id"] not in ids:
            continue
        init = attrs.get("init")
        key = f"{config['model']}_{config['size']}"  # or per dataset: "remamber_base/refcoco"
        published = spec.report.published.get(f"{key}/{config['dataset']['name']}") or \
            spec.report.published.get(key, {})
        metrics = [m for m in PUBLISHED_METRICS if m in published]
        if not init and not metrics:
            continue
        clean = (attrs.get("metrics") or {}).get("clean") or {}
        row = {"cell": config["label"], "stages": "+".join(config.get("stages", []))}
        if init:
            counts = init.get("counts", {})
            row.update({"init": init.get("kind"), "file": Path(init.get("path", "")).name,
                        "loaded": counts.get("loaded"), "missing": counts.get("missing"),
                        "unexpected": counts.get("unexpected"),
                        "mismatched": counts.get("mismatched"),
                        "notes": "; ".join(init.get("notes") or []) or ""})
        else:
            row.update({"init": "random (from scratch)", "file": ""})
        for metric in metrics:
            row[f"{metric} published"] = _fmt(published[metric])
            row[f"{metric} measured"] = _fmt(clean.get(metric))
        row["protocol"] = clean.get("protocol") or ""
        rows.append(row)
    return rows


def init_section(store, spec, ids: set[str] | None = None) -> list[str]:
    """Markdown lines of the section (none when no cell has an init or a published metric)."""
    import pandas as pd

    rows = init_rows(store, spec, ids)
    if not rows:
        return []
    table = pd.DataFrame(rows).fillna("")
    paths = sorted({r.get("file") for r in rows if r.get("file")})
    return ["## Initialisation and published vs measured", "",
            "Weights each cell started from (strict load: any missing, unexpected or "
            "mismatched tensor stops the run) and the paper's figure beside ours, on the clean "
            "test split with the protocol named."
            + (f" Checkpoints: {', '.join(f'`{p}`' for p in paths)}." if paths else ""), "",
            table.to_markdown(index=False), ""]
