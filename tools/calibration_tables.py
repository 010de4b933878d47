#!/usr/bin/env python3
"""Per-category tables of a calibrated binarizer run, as docs/results/calibration.md shows them.

    python3 tools/calibration_tables.py RUN [--sink eval]

RUN is the output folder of `anoflow run pipelines/binarizers-calibrated*.yaml`: the tables come
from RUN/<sink>/results.json (every mask source, in the order the sink lists them) and the
choices from RUN/calibration.md. Means are over categories. Standard library only.
"""
import argparse
import json
import re
import sys
from pathlib import Path

# (title, metric, subset, pooling, digits)
TABLES = [
    ("F1 (anomalous images, pixels pooled)", "f1", "anomalous", "pixels", 3),
    ("precision", "precision", "anomalous", "pixels", 3),
    ("recall", "recall", "anomalous", "pixels", 3),
    ("per-image F1 (mean over anomalous images)", "f1", "anomalous", "image-mean", 3),
    ("F1, all test images (good ones included)", "f1", "all", "pixels", 3),
    ("false-positive area on good images (share of pixels)", "fp_area", "good", "pixels", 4),
]


def table(results, sources, metric, subset, pooling, digits):
    values = {}
    for r in results["records"]:
        if (r["metric"], r["subset"], r["pooling"]) == (metric, subset, pooling) and r["source"] in sources:
            values[(r["category"], r["source"])] = r["value"]
    names = [s.removesuffix(".mask") for s in sources]
    lines = ["| category | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    cats = results["categories"]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(f"{values[(c, s)]:.{digits}f}" for s in sources) + " |")
    means = [sum(values[(c, s)] for c in cats) / len(cats) for s in sources]
    lines.append("| **mean** | " + " | ".join(f"{m:.{digits}f}" for m in means) + " |")
    return "\n".join(lines)


def oracle_line(results):
    f1max = {
        r["category"]: r["value"]
        for r in results["records"]
        if r["metric"] == "f1_max" and r["subset"] == "anomalous" and r["source_kind"] != "mask"
    }
    cats = results["categories"]
    parts = ", ".join(f"{c} {f1max[c]:.3f}" for c in cats)
    mean = sum(f1max[c] for c in cats) / len(cats)
    return (
        "Oracle F1-max of the score maps (one threshold per category chosen on the test ground truth): "
        f"{parts}, mean {mean:.3f}"
    )


def choices(calibration_md):
    """{target: {category: chosen value}} from the summary table of each target."""
    chosen, target = {}, None
    for line in calibration_md.splitlines():
        m = re.match(r"## `([^`]+)`", line)
        if m:
            target = m.group(1)
            chosen[target] = {}
            continue
        m = re.match(r"\| (\S+) \| \d+ \| \d+ \| \S+?=(\S+) \|", line)
        if m and target:
            chosen[target][m.group(1)] = m.group(2).strip('"')
    return {t: c for t, c in chosen.items() if c}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sink", default="eval")
    args = parser.parse_args()
    try:
        results = json.loads((args.run / args.sink / "results.json").read_text())
        calibration = (args.run / "calibration.md").read_text()
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"calibration_tables: {e}")
    sources = results["mask_sources"]
    out = []
    for i, (title, metric, subset, pooling, digits) in enumerate(TABLES):
        out += [f"**{title}**", "", table(results, sources, metric, subset, pooling, digits), ""]
        if i == 0:
            out += [oracle_line(results), ""]
    chosen = choices(calibration)
    if chosen:
        targets = list(chosen)
        out += ["**Chosen per category**", "", "| category | " + " | ".join(targets) + " |",
                "|---|" + "---|" * len(targets)]
        for c in results["categories"]:
            out.append(f"| {c} | " + " | ".join(chosen[t].get(c, "") for t in targets) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
