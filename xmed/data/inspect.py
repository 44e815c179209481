"""Counting a data set and finding every file that cannot be used, with the reason.

Example:
    >>> from xmed.data.datasets.phantom import PhantomRenderDataset
    >>> report = inspect_dataset(PhantomRenderDataset(n=8, size=64), decode=False)
    >>> report["n_images"], report["skipped"]
    (8, [])
"""

from __future__ import annotations

import math

from xmed.data.datasets.base import FundusDataset, Skip
from xmed.errors import DatasetError, ImageReadError
from xmed.findings import FINDINGS


def inspect_dataset(dataset: FundusDataset, decode: bool = True, progress: bool = False) -> dict:
    """Counts (images, positives, per-finding positives and unknowns, eyes) and skipped files.

    Args:
        dataset: any :class:`FundusDataset`; open it with ``on_error="skip"`` to collect
            label-level problems instead of stopping at the first.
        decode: also decode every image (and its masks) to find unreadable files.

    Returns a JSON-able dict with keys ``n_images``, ``n_positive``, ``n_negative``,
    ``n_ungraded``, ``findings`` (code -> {positive, unknown}), ``eyes`` and ``skipped``
    (list of {path, reason}).
    """
    from tqdm.auto import tqdm

    skipped: list[Skip] = list(dataset.skipped)
    usable = []
    for record in tqdm(dataset.records, desc="checking images", unit="img", disable=not (progress and decode)):
        if decode:
            try:
                dataset.load_sample(record)
            except (ImageReadError, DatasetError) as err:
                skipped.append(Skip(err.path, err.reason))
                continue
        usable.append(record)

    findings = {code: {"positive": 0, "unknown": 0} for code in FINDINGS}
    eyes = {"OD": 0, "OS": 0, "unknown": 0}
    n_pos = n_neg = n_ungraded = 0
    for record in usable:
        if math.isnan(record.label):
            n_ungraded += 1
        elif record.label >= 0.5:
            n_pos += 1
        else:
            n_neg += 1
        for code, value in zip(FINDINGS, record.findings):
            if math.isnan(value):
                findings[code]["unknown"] += 1
            elif value >= 0.5:
                findings[code]["positive"] += 1
        eyes[record.eye if record.eye in ("OD", "OS") else "unknown"] += 1
    return {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "n_images": len(usable),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "n_ungraded": n_ungraded,
        "findings": findings,
        "eyes": eyes,
        "skipped": [s.as_dict() for s in skipped],
    }


def format_report(report: dict) -> str:
    """The human-readable form of :func:`inspect_dataset`'s result."""
    lines = [
        f"data set {report['dataset']} at {report['root']}",
        f"  images      {report['n_images']}",
        f"  glaucoma    {report['n_positive']}   normal {report['n_negative']}   ungraded {report['n_ungraded']}",
        f"  eyes        OD {report['eyes']['OD']}   OS {report['eyes']['OS']}   unknown {report['eyes']['unknown']}",
        "  finding     positive  unknown",
    ]
    for code, counts in report["findings"].items():
        lines.append(f"  {code:<10}  {counts['positive']:>8}  {counts['unknown']:>7}")
    lines.append(f"  skipped     {len(report['skipped'])}")
    for skip in report["skipped"]:
        lines.append(f"    {skip['path']}: {skip['reason']}")
    return "\n".join(lines)
