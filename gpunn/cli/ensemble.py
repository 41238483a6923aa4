"""``gpunn train --members K``: K seed networks trained as one :class:`gpunn.Ensemble`, and what the command
reports and writes for it (``gpunn predict`` on an ensemble file is in :mod:`.commands`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from .. import _backend, losses
from .. import callbacks as gpunn_callbacks
from ..errors import ConfigError, GpunnError, InputError
from .files import CheckpointFailed, _why
from .plan import Plan


def is_ensemble(model: Any) -> bool:
    from ..ensemble import Ensemble

    return isinstance(model, Ensemble)


def check_options(s: dict[str, Any], args: argparse.Namespace, resumed: Any) -> None:
    """--members and a resumed file agree, and no option asks what an ensemble run cannot do."""
    if resumed is not None and is_ensemble(resumed) != (s["members"] is not None):
        if is_ensemble(resumed):  # a file from before --members was a setting: it names its own size
            s["members"] = len(resumed)
        else:
            raise InputError(f"--members {s['members']}: {args.resume} holds one network, not an ensemble; a "
                             "resumed run keeps what it trained (start a new run for an ensemble)")  # fmt: skip
    if resumed is not None and is_ensemble(resumed) and len(resumed) != s["members"]:
        raise InputError(f"{args.resume} holds {len(resumed)} members, its settings say --members {s['members']}")
    parallel = getattr(args, "parallel", None)
    if parallel is not None and not args.distributed:
        raise ConfigError(f"--parallel {parallel} splits the work over MPI ranks: add --distributed (and launch "
                          "with mpiexec -n N)")  # fmt: skip
    if parallel == "members" and s["members"] is None:
        raise ConfigError("--parallel members splits an ensemble's members over the ranks: give --members K")
    if s["members"] is None:
        return
    if s["label_smoothing"]:
        raise ConfigError("--label-smoothing trains one network; an ensemble's members train on the labels as "
                          "given (leave out --label-smoothing, or --members)")  # fmt: skip
    if s["stream"]:
        raise ConfigError("--members trains its networks together on data held in memory; --stream trains one "
                          "network (leave out --stream, or --members)")  # fmt: skip


def build(sizes: list[int], s: dict[str, Any], output: str, device: Any) -> Any:
    """The ensemble of a new run: member k seeded with --seed + k, as ``MLP(seed=seed + k)`` would be."""
    from ..ensemble import Ensemble

    return Ensemble(
        sizes, members=s["members"], activation=s["activation"], output=output, seed=s["seed"], device=device,
        dtype=s["dtype"], standardize=True, dropout=s["dropout"],
    )  # fmt: skip


def fit_hooks(model: Any, s: dict[str, Any], args: argparse.Namespace, lead: bool,
              resumed: Any) -> tuple[list[list[Any]], Any, list[Any]]:  # fmt: skip
    """``(each member's callbacks, on_epoch, the members' EarlyStopping)``: early stopping per member (its state
    kept with the member, so a resumed run stops where an unbroken one does), then --checkpoint once an epoch."""
    k = len(model)
    callbacks: list[list[Any]] = [[] for _ in range(k)]
    stoppings: list[Any] = []
    if s["early_stopping"] is not None:
        for m, own in zip(model.members, callbacks):
            stopping = gpunn_callbacks.EarlyStopping(patience=s["early_stopping"])
            if resumed is not None and "early_stopping" in m.metadata.get("callbacks", {}):
                stopping.load_state_dict(m.metadata["callbacks"]["early_stopping"])
            own.append(stopping)
            if split_members(args) or (lead and (args.checkpoint or args.save)):  # (split: gathered with the member)
                own.append(stopping.store_state)
            stoppings.append(stopping)
    on_epoch = None
    if args.checkpoint and lead:
        path = args.checkpoint

        def on_epoch(ens: Any, records: list[dict[str, float]]) -> None:
            try:
                ens.save(path)
            except (OSError, GpunnError) as exc:
                raise CheckpointFailed(f"--checkpoint {path}: cannot write ({_why(exc)})") from exc
            args.checkpointed = ens.epoch

    return callbacks, on_epoch, stoppings


def split_members(args: argparse.Namespace) -> bool:
    """Whether the ranks split the members between them (``--parallel members``)."""
    return getattr(args, "comm", None) is not None and getattr(args, "parallel", None) == "members"


def interrupted_split(model: Any, args: argparse.Namespace) -> int:
    """Ctrl-C on rank 0 of a run whose ranks split the members: rank 0 holds the other ranks' members only as the
    last gather left them, so it writes nothing now; the last --checkpoint holds every member after its epoch."""
    done = getattr(args, "checkpointed", None)
    if done is not None:
        print(f"\ngpunn: interrupted; {args.checkpoint} holds every member after epoch {done} (continue with "
              f"--resume {args.checkpoint})", file=sys.stderr)  # fmt: skip
    else:
        when = "before the first epoch ended" if args.checkpoint else f"after epoch {model.epoch}"
        print(f"\ngpunn: interrupted {when}; nothing saved (the ranks split the members: --checkpoint PATH saves "
              "every member after every epoch)", file=sys.stderr)  # fmt: skip
    return 130


def report_stopping(model: Any, stoppings: list[Any]) -> None:
    for m, stopping in zip(model.members, stoppings):  # a member another rank trained brought its state along
        state = m.metadata.get("callbacks", {}).get("early_stopping")
        if state is not None:
            stopping.load_state_dict(state)
    stopped = [(i, e) for i, e in enumerate(stoppings) if e.stopped_epoch is not None]
    if not stopped:
        return
    shown = ", ".join(f"member {i} after epoch {e.stopped_epoch} (restored epoch {e.best_epoch})" for i, e in stopped)
    print(f"stopped early ({len(stopped)} of {len(stoppings)} members; val_loss did not improve for "
          f"{stoppings[0].patience} epochs): {shown}")  # fmt: skip


def scores(model: Any, X: Any, y: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """``(the members' mean scores, the ensemble's)`` on the test rows: accuracy and loss (the ensemble's
    accuracy from its mean probabilities), or R², MSE and MAE (the ensemble's of its mean value)."""
    from .targets import regression_scores

    if model.output in losses.REGRESSION:
        each = [regression_scores(y, _backend.to_numpy(m.predict(X))[:, 0], model.output) for m in model.members]
        ensemble = regression_scores(y, _backend.to_numpy(model.predict(X))[:, 0], model.output)
    else:
        each = [m.evaluate(X, y) for m in model.members]
        predicted = _backend.to_numpy(model.predict(X))
        truth = np.asarray(_backend.to_numpy(y) if not _backend.is_host_data(y) else y)
        ensemble = {"accuracy": float(np.mean(predicted.reshape(truth.shape) == truth))}
    mean = {key: float(np.mean([e[key] for e in each])) for key in each[0]}
    return mean, ensemble


def report_test(model: Any, plan: Plan) -> None:
    """Two lines: the members' mean test scores, then the ensemble's (the last line, as one model's is)."""
    assert plan.test is not None
    mean, ensemble = scores(model, *plan.test)
    k = len(model)
    if model.output not in losses.REGRESSION:
        print(f"members' mean test accuracy {mean['accuracy']:.4f}  (test loss {mean['loss']:.4f})")
        print(f"ensemble of {k} test accuracy {ensemble['accuracy']:.4f}")
    else:
        print("members' mean test " + "  ".join(f"{key} {v:.6g}" for key, v in mean.items()))
        print(f"ensemble of {k} test " + "  ".join(f"{key} {v:.6g}" for key, v in ensemble.items()))


def save_histories(model: Any, path: str) -> None:
    """--history of an ensemble: ``{"members": [each member's history]}``, as JSON."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"members": [m.history.to_dict() for m in model.members]}, f, indent=1)
            f.write("\n")
    except OSError as exc:
        raise InputError(f"--history {path}: cannot write ({exc.strerror or exc})") from None
