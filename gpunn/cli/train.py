"""``gpunn train``: settings (given, resumed or default), the data plan, training and what is written."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import _backend, data, losses, presets, schedules
from .. import callbacks as gpunn_callbacks
from .._version import __version__
from ..errors import ConfigError, InputError, NonFiniteError
from ..feed import encode
from ..feed.encode import MAX_CATEGORIES
from . import ensemble
from .files import CheckpointFailed, check_outputs, checkpointer, outliving_stdout, save_or_rescue
from .parser import check_settings
from .plan import Plan, in_memory, streamed
from .targets import Target, regression_scores

EXIT_ERROR = 2  # every error, a diverged run included

# Settings of `gpunn train` that a checkpoint remembers, with their defaults.
TRAIN_DEFAULTS: dict[str, Any] = {
    "data": None, "target": None, "features": None, "dataset": "moons", "samples": None, "test_size": 0.2,
    "layers": [10, 10, 10], "activation": "relu", "output": None, "dtype": "float32",
    "epochs": 1000, "lr": 0.1, "batch_size": None, "optimizer": "sgd", "clip_norm": None, "seed": 0,
    "weight_decay": None, "schedule": "constant", "early_stopping": None, "validation_split": None,
    "class_weight": None, "dropout": 0.0, "stream": False, "sample_weight": None, "delimiter": None,
    "members": None, "max_categories": MAX_CATEGORIES, "label_smoothing": 0.0, "preset": "tutorial",
}  # fmt: skip
# What the tabular preset sets (and batch_size, sized to the training rows once the plan has split them).
TABULAR: dict[str, Any] = {
    "layers": list(presets.TABULAR.hidden), "epochs": presets.TABULAR.epochs, "lr": presets.TABULAR.lr,
    "optimizer": presets.TABULAR.optimizer, "weight_decay": presets.TABULAR.weight_decay,
    "schedule": presets.TABULAR.schedule, "early_stopping": presets.TABULAR.patience,
    "validation_split": presets.TABULAR.validation_split, "label_smoothing": presets.TABULAR.label_smoothing,
    "dropout": presets.TABULAR.dropout,
}  # fmt: skip
ARCHITECTURE = ("layers", "activation", "output", "dtype", "dropout", "features", "members")


def _train_settings(args: argparse.Namespace, stored: dict[str, Any]) -> dict[str, Any]:
    """Each option as given, else as the resumed checkpoint had it, else its preset's default (--preset: given, the
    checkpoint's, tabular with --data, else tutorial; a checkpoint from before presets was trained as the
    tutorial's), else its default."""
    data = args.data if args.data is not None else stored.get("data")
    preset = args.preset or stored.get("preset") or ("tabular" if data is not None and not stored else "tutorial")
    defaults = {**TRAIN_DEFAULTS, **(TABULAR if preset == "tabular" else {}), "preset": preset}
    if preset == "tabular" and (args.members or stored.get("members")):
        defaults["label_smoothing"] = 0.0  # an ensemble's members train on the labels as given
    settings = {}
    for key, default in defaults.items():
        given = getattr(args, key)
        if given is not None and key in ARCHITECTURE and key in stored and given != stored[key]:
            raise InputError(f"--{key.replace('_', '-')} {given} differs from the resumed checkpoint's {stored[key]}")
        settings[key] = given if given is not None else stored.get(key, default)
    if settings["optimizer"] != "adamw" and args.weight_decay is None and "weight_decay" not in stored:
        settings["weight_decay"] = None  # the preset's decay is AdamW's: another optimizer given has none
    if settings["optimizer"] == "lbfgs":  # full batch and one loss for its line search: no schedule, no dropout
        for key, plain in (("schedule", "constant"), ("dropout", 0.0)):
            if getattr(args, key) is None and key not in stored:
                settings[key] = plain
    if settings["output"] is None:
        if settings["data"] is not None:
            settings["output"] = "auto"
        else:
            settings["output"] = "softmax" if settings["dataset"] == "spirals" else "sigmoid"
    return settings


def _schedule(s: dict[str, Any]) -> Any:
    """The learning rate of the settings: a number, or the schedule named by --schedule."""
    lr, epochs = s["lr"], max(1, s["epochs"])
    return {
        "constant": lambda: lr,
        "step": lambda: schedules.step(lr, every=max(1, epochs // 3)),
        "cosine": lambda: schedules.cosine(lr, epochs),
        "plateau": lambda: schedules.plateau(lr),
    }[s["schedule"]]()


def cmd_train(args: argparse.Namespace) -> int:
    """``gpunn train``."""
    with outliving_stdout():  # `gpunn train ... | head -1` still trains and saves
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from .._load import load
    from ..ensemble import Ensemble
    from ..model import MLP

    comm = getattr(args, "comm", None)
    lead = comm is None or comm.rank == 0  # only rank 0 prints and writes files
    device = comm.device() if comm is not None and args.device == "auto" else args.device
    quiet = args.quiet or not lead
    if lead:
        check_outputs(args)  # before training: a path that cannot be written must not cost the trained model
    resumed = load(args.resume, device=device) if args.resume else None
    # a checkpoint is not signed: what it says about training goes through the checks of the flags
    stored = check_settings(resumed.metadata.get("train", {}), args.resume) if resumed is not None else {}
    s = _train_settings(args, stored)
    ensemble.check_options(s, args, resumed)
    if resumed is None and s["epochs"] == 0:
        raise InputError("--epochs 0 trains nothing; give 1 or more (with --resume, the total to reach)")
    plan = streamed(s) if s["stream"] else in_memory(s, table=getattr(resumed, "encoding", None) is not None)
    if s["preset"] == "tabular" and s["batch_size"] is None and s["optimizer"] != "lbfgs":
        s["batch_size"] = presets.TABULAR.batch_size(plan.rows(plan.train))
    target, source = plan.target, plan.source
    encoding = _encoding(plan, s, resumed, args.resume)
    output, n_outputs, classes = target.output, target.n_outputs, target.classes
    if args.plot and (plan.n_features != 2 or output in losses.REGRESSION or s["stream"] or plan.test is None):
        raise InputError(f"--plot draws a decision boundary over the test rows, which needs a classifier on 2 "
                         f"features held in memory and --test-size above 0; {source} has {plan.n_features} "
                         f"feature(s) and output {output!r}")  # fmt: skip
    if args.label_smoothing and output in losses.REGRESSION:  # (the tabular preset's 0.1 is its classifiers')
        raise ConfigError(f"--label-smoothing trains a classifier on smoothed labels; the target {s['target']!r} "
                          f"is a regression (output {output!r}): leave it out")  # fmt: skip
    sizes = [plan.n_features if encoding is None else encoding.width, *s["layers"], n_outputs]
    if resumed is not None:
        _check_resumed(resumed, args.resume, sizes, target, source)
        model = resumed
    elif s["members"] is not None:
        model = ensemble.build(sizes, s, output, device)
        model.feature_names, model.target_name = plan.names, s["target"]
    else:
        model = MLP(
            sizes, activation=s["activation"], output=output, seed=s["seed"], device=device,
            dtype=s["dtype"], standardize=True, dropout=s["dropout"],
            label_smoothing=s["label_smoothing"] if output not in losses.REGRESSION else 0.0,
        )  # fmt: skip
        model.feature_names, model.target_name = plan.names, s["target"]
    for m in model.members if isinstance(model, Ensemble) else [model]:
        m.encoding = encoding
        m.metadata["train"] = s
        if classes is not None:
            m.metadata["classes"] = classes
            if m.classes is None:  # a new model: it takes the labels (a resumed one holds them)
                m.classes = target.held
    remaining = max(s["epochs"] - model.epoch, 0)
    if resumed is not None and lead:
        if not remaining:
            print(f"gpunn: note: {args.resume} has trained {model.epoch} epochs, --epochs {s['epochs']}: nothing to "
                  f"train (raise --epochs to continue)", file=sys.stderr)  # fmt: skip
        elif not (args.save or args.checkpoint):
            print(f"gpunn: note: the resumed training is not saved: add --save PATH or --checkpoint PATH "
                  f"({args.resume} itself is left as it is)", file=sys.stderr)  # fmt: skip
    if not quiet:
        _header(model, s, plan, resumed is not None, comm, ensemble.split_members(args))
    X_train, y_train = plan.train
    fit_settings = dict(
        epochs=remaining, lr=_schedule(s), batch_size=s["batch_size"], optimizer=s["optimizer"],
        clip_norm=s["clip_norm"], weight_decay=s["weight_decay"], class_weight=s["class_weight"],
        sample_weight=plan.weight, validation_data=plan.validation, verbose=0 if quiet else 1, copy=False,
    )  # fmt: skip
    stoppings: list[Any] = []
    if ensemble.is_ensemble(model):  # early stopping per member, --checkpoint once an epoch
        member_callbacks, on_epoch, stoppings = ensemble.fit_hooks(model, s, args, lead, resumed)
        fit_settings.update(callbacks=member_callbacks, on_epoch=on_epoch, comm=comm, parallel=args.parallel or "rows")
    else:
        callbacks: list[Any] = [checkpointer(args.checkpoint)] if args.checkpoint and lead else []
        if s["early_stopping"] is not None:  # before the checkpoint: a stop restores the best epoch, then it is saved
            stopping = gpunn_callbacks.EarlyStopping(patience=s["early_stopping"])
            if resumed is not None and "early_stopping" in resumed.metadata.get("callbacks", {}):
                stopping.load_state_dict(resumed.metadata["callbacks"]["early_stopping"])
            if lead and (args.checkpoint or args.save):  # its state is saved with the model: a resume stops as this
                callbacks.insert(0, stopping.store_state)
            callbacks.insert(0, stopping)
            stoppings.append(stopping)
        fit_settings.update(callbacks=callbacks, comm=comm)
    args.training = True  # from here a Ctrl-C is answered below, or after training by main
    try:
        model.fit(X_train, y_train, **fit_settings)
    except KeyboardInterrupt:
        path = args.checkpoint or args.save
        if not lead:
            return 130
        if path and ensemble.split_members(args):  # rank 0 holds the others' members as last gathered
            return ensemble.interrupted_split(model, args)
        if path:
            model.save(path)
            print(f"\ngpunn: interrupted after epoch {model.epoch}; saved to {path} (continue with --resume {path})",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"\ngpunn: interrupted after epoch {model.epoch}; nothing saved (use --checkpoint PATH)",
                  file=sys.stderr)  # fmt: skip
        return 130
    except CheckpointFailed as exc:  # only the lead rank writes checkpoints
        path = args.save or args.checkpoint
        _, failed = save_or_rescue(model, path, failed=f"{exc} after epoch {model.epoch}" if path == args.checkpoint
                                   else None)  # fmt: skip
        print(f"gpunn: error: {failed or f'{exc} after epoch {model.epoch}; the model is saved to {path}'}",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    except NonFiniteError as exc:
        if lead:  # every rank sees the same divergence; one reports it
            print(f"gpunn: {exc}{_keep_diverged(model, args)}", file=sys.stderr)
        return EXIT_ERROR
    if not lead:
        return 0
    if ensemble.is_ensemble(model):
        if not quiet:
            ensemble.report_stopping(model, stoppings)
    elif stoppings and stoppings[0].stopped_epoch is not None and not quiet:
        stopping = stoppings[0]
        print(f"stopped early after epoch {stopping.stopped_epoch}: val_loss did not improve for {stopping.patience} "
              f"epochs; restored epoch {stopping.best_epoch} (val_loss {stopping.best:.4f})")  # fmt: skip
    _report_test(model, plan)
    return _write(model, args, plan)


def _encoding(plan: Plan, s: dict[str, Any], resumed: Any, path: str | None) -> Any:
    """The encoding of a file with text or empty cells among its features: a resumed model's, else learned from
    the training rows (the test and validation rows are not looked at); None for a file of complete numbers."""
    if not isinstance(plan.train[0], data.Columns):
        return None
    if resumed is not None:
        if resumed.encoding is None:
            raise InputError(f"{plan.source} has text or empty cells among its features, but {path} was trained on "
                             "complete numbers only")  # fmt: skip
        return resumed.encoding
    return encode.learn(plan.train[0], max_categories=s["max_categories"], name=plan.source)


def _described(encoding: Any) -> str:
    """What the encoding does, for the opening lines."""
    text = [f for f in encoding.features if f.kind != "number"]
    filled = [f for f in encoding.features if f.kind == "number" and f.indicator]
    parts = []
    if text:
        parts.append(f"{len(text)} text column(s) one-hot ({', '.join(f'{f.name}: {f.width}' for f in text[:6])}"
                     f"{', ...' if len(text) > 6 else ''})")  # fmt: skip
    if filled:
        parts.append(f"{len(filled)} with empty cells filled by the median and flagged")
    return f"columns encoded: {'; '.join(parts) or 'numbers'}; {encoding.width} inputs"


def _check_resumed(resumed: Any, path: str, sizes: list[int], target: Target, source: str) -> None:
    """The data of a resumed run fits the checkpoint: the same network, output and classes."""
    if resumed.output != target.output:
        raise InputError(f"{source} gives a {target.output} output but {path} holds a {resumed.output} model")
    if resumed.output not in losses.REGRESSION:
        held = resumed.metadata.get("classes")
        if held is None:  # a model trained on 0..k-1 (0/1 for sigmoid) as they were
            held = list(range(max(resumed.n_outputs, 2)))
        if list(held) != target.classes:
            raise InputError(f"the classes of {source}'s target, {target.classes}, differ from those {path} was "
                             f"trained on, {list(held)}; a resumed model keeps its classes")  # fmt: skip
    if resumed.sizes != sizes:
        raise InputError(f"{source} gives a network of sizes {sizes} but {path} holds {resumed.sizes}")


def _header(model: Any, s: dict[str, Any], plan: Plan, resuming: bool, comm: Any, split: bool) -> None:
    """The opening line: network, output (and why), data, rows of each part, namespace and device."""
    output = plan.target.output
    described = f"{output} output, chosen from the target" if s["output"] == "auto" else f"{output} output"
    if s["output"] == "auto" and plan.target.why:
        described += f" ({plan.target.why})"
    parts = [f"{plan.rows(plan.train)} train"]
    if plan.validation is not None:
        parts.append(f"{plan.rows(plan.validation)} validation")
    parts.append(f"{plan.rows(plan.test)} test rows" if plan.test is not None else "no test rows (--test-size 0)")
    done = f", resuming at epoch {model.epoch}" if resuming else ""
    if comm is not None:
        done += f", {'members split' if split else 'data-parallel'} over {comm.size} ranks"
    dropout = model.members[0].dropout if ensemble.is_ensemble(model) else model.dropout
    what = f"{len(model)} networks {model.sizes}" if ensemble.is_ensemble(model) else f"{model.sizes}"
    print(
        f"gpunn {__version__}: training {what} ({s['activation']}, {described}"
        f"{f', dropout {dropout:g}' if dropout else ''}) "
        f"on {plan.source}{', streamed' if s['stream'] else ''}, {' / '.join(parts)}, "
        f"{_backend.namespace_name(model.xp)} on {model.device}, {s['dtype']}{done}{_recipe(s, output)}"
    )
    if getattr(model, "encoding", None) is not None:
        print(_described(model.encoding))
    if s["schedule"] == "plateau" and plan.validation is None:
        print("gpunn: note: --schedule plateau watches the training loss; --validation-split F makes it watch "
              "held-out rows", file=sys.stderr)  # fmt: skip


def _recipe(s: dict[str, Any], output: str) -> str:
    """What the tabular preset chose, for the opening line (the tutorial's line stays as it always was)."""
    if s["preset"] != "tabular":
        return ""
    chosen = [f"{s['optimizer']} lr {s['lr']:g}" + (f" ({s['schedule']})" if s["schedule"] != "constant" else "")]
    if s["weight_decay"] is not None and s["optimizer"] == "adamw":
        chosen.append(f"weight decay {s['weight_decay']:g}")
    chosen.append(f"batch {s['batch_size']}" if s["batch_size"] else "full batch")
    chosen.append(f"{s['epochs']} epochs")
    if s["early_stopping"] is not None:
        chosen.append(f"early stopping {s['early_stopping']} (best epoch kept)")
    if s["label_smoothing"] and output not in losses.REGRESSION:
        chosen.append(f"label smoothing {s['label_smoothing']:g}")
    return "; tabular preset: " + ", ".join(chosen) + " (--preset tutorial for the tutorial's settings)"


def _keep_diverged(model: Any, args: argparse.Namespace) -> str:
    """Save the weights a diverged run kept (its last finite epoch) to --save; what to add to the message."""
    kept = ""
    if args.checkpoint and model.epoch:  # the model went back to its last good epoch: so does the checkpoint
        path, failed = save_or_rescue(model, args.checkpoint)
        kept = f"; {failed}" if failed else f"; {path} holds the last good epoch ({model.epoch})"
    if not args.save:
        return kept
    if not model.epoch:
        return f"{kept}; nothing saved to {args.save}: it diverged in its first epoch"
    path, failed = save_or_rescue(model, args.save)
    if failed:
        return f"{kept}; {failed}"
    return f"{kept}; the last good weights (epoch {model.epoch}) are saved to {path}"


def _report_test(model: Any, plan: Plan) -> None:
    """The one look at the test rows: accuracy and loss, or R², MSE and MAE."""
    if plan.test is None:
        print(f"no test rows (--test-size 0): trained on all {plan.rows(plan.train) + plan.rows(plan.validation)} "
              "rows, nothing held out to test on")  # fmt: skip
        return
    if ensemble.is_ensemble(model):
        ensemble.report_test(model, plan)
        return
    X_test, y_test = plan.test
    if model.output not in losses.REGRESSION:
        result = model.evaluate(X_test, y_test)
        print(f"test accuracy {result['accuracy']:.4f}  (test loss {result['loss']:.4f})")
    elif y_test is None:  # a streamed regression: its mean loss
        print(f"test {'mse' if model.output == 'identity' else 'deviance'} {model.evaluate(X_test)['loss']:.6g}")
    else:
        scores = regression_scores(y_test, _backend.to_numpy(model.predict(X_test))[:, 0], model.output)
        print("test " + "  ".join(f"{k} {v:.6g}" for k, v in scores.items()))


def _write(model: Any, args: argparse.Namespace, plan: Plan) -> int:
    """The model first (it is what the run was for; rescued elsewhere if --save fails), then history and plot."""
    status = 0
    if args.save:
        path, failed = save_or_rescue(model, args.save)
        if failed:
            print(f"gpunn: error: {failed}", file=sys.stderr)
            status = EXIT_ERROR
        elif not args.quiet:
            print(f"model saved to {path}")
    if args.history and ensemble.is_ensemble(model):
        ensemble.save_histories(model, args.history)
    elif args.history:
        try:
            model.history.save(args.history)
        except OSError as exc:
            raise InputError(f"--history {args.history}: cannot write ({exc.strerror or exc})") from None
    if args.plot:
        from .. import plot

        assert plan.test is not None  # checked before training
        written = plot.save(plot.decision_boundary(model, *plan.test), args.plot)
        if not args.quiet:
            print(f"decision boundary drawn to {written}")
    return status
