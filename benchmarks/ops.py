"""Array operations per training step: ``python -m benchmarks.ops [--verbose] [--cells ...] [--optimizers ...]``.

On a GPU every Array API call gpunn makes is at least one kernel launch, and for small layers the launches, not
the arithmetic, set the step time. So the number of array operations per step is a GPU speed figure that any
machine can measure: this counts them with PyTorch's profiler on gpunn's eager torch CPU path.

Method: one warm-up ``fit``, then a profiled ``fit`` of E + 1 epochs whose epoch callback drops a marker. Only
the operations between the first and the last marker count, so E whole epochs (shuffling and the metric
read-back included, amortized over their steps) and none of ``fit``'s once-per-call validation and placement.
Counted: top-level ``aten::`` operations (no ``aten::`` ancestor) that compute or read back; views, metadata
and casts that return their input are not (see ``NOT_COUNTED`` and ``COUNTED_IF_COPYING``). So on this CPU path
host-device transfers that return their input are not counted either (the epoch's read-back ``.cpu()``, the
shuffled order's upload, Python scalars made tensors by array-api-compat: ``aten::lift_fresh``); on a GPU each is a
copy. ``--verbose`` lists them under "not counted".

Host read-backs (``--readbacks``): how often a ``fit`` copies metrics back from the device, each one a wait for
the device (on a GPU, a stall of its queue). Without callbacks gpunn queues the epochs between two progress
lines and reads their metrics back together: counted are calls of ``gpunn.train.read_back`` (each one host
wait) against the epochs and the progress lines of a ``fit`` printing to a file (a line every tenth of the
epochs).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
from pathlib import Path

import torch

from benchmarks.worker import CELLS, LR, make_data, steps_per_epoch

MARK = "gpunn-ops-epoch-mark"
DEFAULT_ROWS = [
    ("tiny", "sgd", 0.0), ("tiny", "adam", 0.0), ("mid-128", "sgd", 0.0), ("mid-128", "adam", 0.0),
    ("mid-1024", "sgd", 0.0), ("tiny", "adam", 0.2), ("mid-128", "adam", 0.2),
]  # fmt: skip
# Ensembles (gpunn.Ensemble): (cell, optimizer, members). One stacked step trains every member: an ensemble of 32
# should cost about the operations of one (issue 18: at most 1.15x), and one member about a lone MLP.
ENSEMBLE_ROWS = [("tiny", "sgd", 1), ("tiny", "sgd", 32), ("tiny", "adam", 1), ("tiny", "adam", 32)]
EPOCHS = {"tiny": 5}  # profiled epochs per cell; the others get MID_EPOCHS
MID_EPOCHS = 2
RESULTS = Path(__file__).parent / "results" / "ops.json"

# Not counted: operations that launch no kernel. Views and metadata only change shape, strides or flags (on a
# GPU they run on the host alone); allocation without fill has no kernel either.
NOT_COUNTED = {
    "aten::view", "aten::_unsafe_view", "aten::slice", "aten::select", "aten::t", "aten::transpose",
    "aten::permute", "aten::expand", "aten::expand_as", "aten::as_strided", "aten::alias", "aten::detach",
    "aten::swapaxes", "aten::swapdims", "aten::detach_", "aten::lift_fresh", "aten::unsqueeze", "aten::squeeze",
    "aten::_reshape_alias", "aten::movedim", "aten::moveaxis",
    "aten::unflatten", "aten::numpy_T", "aten::matrix_H", "aten::mT", "aten::split", "aten::unbind",
    "aten::chunk", "aten::narrow", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::resolve_conj",
    "aten::resolve_neg", "aten::result_type", "aten::set_", "aten::resize_",
}  # fmt: skip
# Counted only when they copy (an aten::copy_ or aten::clone below them); otherwise they return their input.
COUNTED_IF_COPYING = {"aten::reshape", "aten::flatten", "aten::contiguous", "aten::to", "aten::_to_copy"}
COPIES = {"aten::copy_", "aten::clone"}


def _children(events):
    kids = collections.defaultdict(list)
    for e in events:
        if e.cpu_parent is not None:
            kids[id(e.cpu_parent)].append(e)
    return kids


def _copies(event, kids) -> bool:
    return any(k.name in COPIES or _copies(k, kids) for k in kids[id(event)])


def _top_level_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return event.name.startswith("aten::")


def count_ops(events) -> tuple[collections.Counter, collections.Counter]:
    """Top-level aten operations by name, counted and not counted, that start between the first and the last
    epoch marker."""
    marks = sorted(e.time_range.start for e in events if e.name == MARK)
    lo, hi = marks[0], marks[-1]
    kids = _children(events)
    counted, skipped = collections.Counter(), collections.Counter()
    for e in events:
        if lo < e.time_range.start < hi and _top_level_aten(e):
            skip = e.name in NOT_COUNTED or (e.name in COUNTED_IF_COPYING and not _copies(e, kids))
            (skipped if skip else counted)[e.name] += 1
    return counted, skipped


def measure(
    cell_name: str, optimizer: str, dropout: float = 0.0, members: int | None = None, n: int | None = None
) -> dict:
    """Operations per step of a lone MLP, or with ``members`` of a gpunn.Ensemble of that many; ``n`` rows instead
    of the cell's (fewer steps per epoch spread each epoch's own operations thinner, so the count only rises)."""
    import gpunn

    cell = dict(CELLS[cell_name], n=n or CELLS[cell_name]["n"])
    sizes, bs = cell["sizes"], cell["batch"]
    X, y = make_data(cell)
    output = "softmax" if sizes[-1] > 1 else "sigmoid"
    kw = dict(output=output, seed=0, xp=torch, device="cpu", compile=False, dropout=dropout)
    m = gpunn.MLP(sizes, **kw) if members is None else gpunn.Ensemble(sizes, members, **kw)
    fit = dict(lr=LR, batch_size=bs, optimizer=optimizer, verbose=0)
    m.fit(X, y, epochs=2, **fit)  # warm-up: optimizer state, lazy initialization, caches

    def mark(model, record):
        with torch.profiler.record_function(MARK):
            pass

    epochs = EPOCHS.get(cell_name, MID_EPOCHS)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        m.fit(X, y, epochs=epochs + 1, callbacks=[mark], **fit)
    counted, skipped = count_ops(prof.events())
    steps = epochs * steps_per_epoch(len(X), bs)
    return {
        "cell": cell_name, "sizes": sizes, "n": len(X), "batch": bs, "optimizer": optimizer, "dropout": dropout,
        "members": members, "epochs": epochs,
        "steps": steps, "ops_per_step": sum(counted.values()) / steps,
        "breakdown": {name: c / steps for name, c in counted.most_common()},
        "not_counted": {name: c / steps for name, c in skipped.most_common()},
    }  # fmt: skip


def readbacks(cell_name: str = "tiny", epochs: int = 40, verbose: int = 1, callbacks: bool = False) -> dict:
    """Host read-backs of one ``fit`` of ``epochs`` epochs (eager torch CPU, as the operation counts), against its
    epochs and progress lines."""
    import gpunn
    from gpunn import train

    cell = CELLS[cell_name]
    sizes, bs = cell["sizes"], cell["batch"]
    X, y = make_data(cell)
    output = "softmax" if sizes[-1] > 1 else "sigmoid"
    m = gpunn.MLP(sizes, output=output, seed=0, xp=torch, device="cpu", compile=False)
    fit = dict(lr=LR, batch_size=bs, verbose=0)
    m.fit(X, y, epochs=1, **fit)
    real, calls = train.read_back, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    out, hooks = io.StringIO(), [lambda model, record: None] if callbacks else None
    train.read_back = counting
    try:
        with contextlib.redirect_stdout(out):
            m.fit(X, y, epochs=epochs, **{**fit, "verbose": verbose}, callbacks=hooks)
    finally:
        train.read_back = real
    lines = len(out.getvalue().splitlines())
    return {"cell": cell_name, "epochs": epochs, "verbose": verbose, "callbacks": callbacks, "lines": lines,
            "read_backs": len(calls), "per_epoch": len(calls) / epochs,
            "per_line": len(calls) / lines if lines else None}  # fmt: skip


def _fmt(x: float) -> str:
    return f"{x:.0f}" if x == round(x) else f"{x:.2f}"


def table(rows: list[dict], verbose: bool) -> str:
    lines = [
        "| cell | sizes | batch | optimizer | dropout | networks | ops per step |",
        "|---|---|---|---|---|---|---:|",
    ]
    for r in rows:
        batch = f"{r['batch']}" if r["batch"] else f"full ({r['n']})"
        networks = "MLP" if r.get("members") is None else f"Ensemble of {r['members']}"
        cells = [r["cell"], r["sizes"], batch, r["optimizer"], f"{r['dropout']:g}", networks, _fmt(r["ops_per_step"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
        if verbose:
            lines += [f"|   | `{name}` | | | | | {_fmt(c)} |" for name, c in r["breakdown"].items()]
            skipped = ", ".join(f"{name[6:]} {_fmt(c)}" for name, c in r["not_counted"].items())
            lines.append(f"|   | not counted: {skipped or 'none'} | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS), help="cells to count (default: the five rows)")
    parser.add_argument("--optimizers", nargs="+", choices=["sgd", "momentum", "adam"], help="optimizers to count")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate with --cells/--optimizers")
    parser.add_argument("--members", type=int, help="count a gpunn.Ensemble of this many networks with --cells")
    parser.add_argument("--verbose", action="store_true", help="per-operation breakdown under each row")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    parser.add_argument("--readbacks", action="store_true", help="count host read-backs per epoch and progress line")
    args = parser.parse_args(argv)
    if args.readbacks:
        print("| cell | epochs | verbose | callback | progress lines | read-backs | per epoch | per line |")
        print("|---|---|---|---|---|---|---|---|")
        for cell, verbose, cb in (("tiny", 1, False), ("tiny", 0, False), ("tiny", 2, False), ("tiny", 1, True),
                                  ("mid-128", 1, False)):  # fmt: skip
            r = readbacks(cell, 40 if cell == "tiny" else 10, verbose, cb)
            per_line = "-" if r["per_line"] is None else _fmt(r["per_line"])
            print(f"| {cell} | {r['epochs']} | {verbose} | {'yes' if cb else 'no'} | {r['lines']} | {r['read_backs']} "
                  f"| {_fmt(r['per_epoch'])} | {per_line} |")  # fmt: skip
        return
    if args.cells or args.optimizers:
        cells, optimizers = args.cells or ["tiny", "mid-128", "mid-1024"], args.optimizers or ["sgd", "adam"]
        rows = [(c, o, args.dropout, args.members) for c in cells for o in optimizers]
    else:
        rows = [(c, o, d, None) for c, o, d in DEFAULT_ROWS] + [(c, o, 0.0, k) for c, o, k in ENSEMBLE_ROWS]
    results = [measure(c, o, d, k) for c, o, d, k in rows]
    print("Array operations per training step, gpunn on eager torch CPU (top-level aten ops, per-epoch work amortized;")
    print(f"n = the cell's rows; profiled epochs: tiny {EPOCHS['tiny']}, others {MID_EPOCHS}).\n")
    print(table(results, args.verbose))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"torch": torch.__version__, "rows": results}, indent=1) + "\n")
    print(f"\nWrote {args.json}")


if __name__ == "__main__":
    main()
