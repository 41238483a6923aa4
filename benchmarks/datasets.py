"""The real datasets scikit-learn ships, through scikit-learn's MLP and gpunn on the same split, scores and times
side by side: ``python -m benchmarks.datasets`` (needs scikit-learn).

Each dataset (iris, wine, breast cancer, digits; diabetes for regression) is split 75/25 (stratified for
classifiers, seed 0); the regression target is standardized with the training rows' statistics (R^2 does not
change). Three contenders:

- **sklearn**: ``make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=300, random_state=0))``
  (``MLPRegressor`` for diabetes), every other parameter scikit-learn's default: Adam at lr 1e-3,
  ``batch_size=min(200, n)``, ``alpha=1e-4``, and its stopping rule (``tol=1e-4``, ``n_iter_no_change=10``);
- **gpunn**: the same pipeline with ``gpunn.sklearn``'s estimator, same parameters (``device="auto"``);
- **gpunn+**: ``gpunn.MLP`` with the features users ask for: GELU, dropout 0.1, AdamW (weight decay 0.01), a
  cosine schedule peaking at 3e-3 after 10 warm-up epochs, early stopping on 10% of the training rows (patience
  20, best epoch restored) and, for classifiers, balanced class weights (at most 300 epochs, batches of 200).

The score is the test accuracy (classifiers) or R^2 (regression); the time is ``fit``'s wall-clock seconds, the
median over ``--rounds`` rounds, the contenders interleaved within each round (so a machine whose load changes
slows them alike); "gpunn / sklearn" is the median of the rounds' ratios. ``--grid`` adds a 4-point
``GridSearchCV`` (5 folds) over the digits pipeline for sklearn and gpunn, and gpunn's ``MLPSearchCV`` over the
same grid. ``--threads N`` limits every contender's BLAS to N threads (on a loaded machine, OpenBLAS's threads
wait on each other); the BLAS threads and the load average are recorded.

``--solver lbfgs`` compares L-BFGS instead: ``make_pipeline(StandardScaler(), MLPClassifier((64,),
solver="lbfgs", random_state=0))`` (every other parameter the default: ``max_iter=200``, ``max_fun=15000``,
``tol=1e-4``, ``alpha=1e-4``) from scikit-learn and from ``gpunn.sklearn`` (``device="auto"``), on digits, breast
cancer and wine, interleaved, medians over the rounds of the fits' wall-clock and CPU times (results in
``results/datasets_lbfgs.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "datasets.json"
EPOCHS, LR, BATCH, HIDDEN = 300, 1e-3, 200, (64, 32)
CONTENDERS = ("sklearn", "gpunn", "gpunn+")
GRID = {"alpha": [1e-4, 1e-2], "hidden_layer_sizes": [(64, 32), (128,)]}


def datasets():
    from sklearn import datasets as d

    return {
        "iris": (d.load_iris(return_X_y=True), True),
        "wine": (d.load_wine(return_X_y=True), True),
        "breast cancer": (d.load_breast_cancer(return_X_y=True), True),
        "digits": (d.load_digits(return_X_y=True), True),
        "diabetes": (d.load_diabetes(return_X_y=True), False),
    }


def split(X, y, classifier):
    """The raw 75/25 split (the pipelines standardize X themselves); a regression target is standardized."""
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y if classifier else None
    )
    if not classifier:  # the target too, with the training rows' statistics (R^2 does not change)
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    return X_train, X_test, y_train, y_test


def score(y_true, y_pred, classifier) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    return float(accuracy_score(y_true, y_pred) if classifier else r2_score(y_true, y_pred))


def pipeline(module, classifier):
    """The user's pipeline: StandardScaler, then the MLP with scikit-learn's defaults but the shape."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cls = module.MLPClassifier if classifier else module.MLPRegressor
    return make_pipeline(StandardScaler(), cls(hidden_layer_sizes=HIDDEN, max_iter=EPOCHS, random_state=0))


def run_estimator(module, X_train, X_test, y_train, y_test, classifier, est=None):
    """The pipeline ``est`` (default: :func:`pipeline` of ``module``) fitted and scored: (score, seconds,
    iterations)."""
    from sklearn.exceptions import ConvergenceWarning

    est = pipeline(module, classifier) if est is None else est
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X_train, y_train)
        seconds = time.perf_counter() - t0
    return score(y_test, est.predict(X_test), classifier), seconds, int(est[-1].n_iter_)


def run_sklearn(*parts):
    import sklearn.neural_network

    return run_estimator(sklearn.neural_network, *parts)


def run_gpunn(*parts):
    import gpunn.sklearn

    return run_estimator(gpunn.sklearn, *parts)


def run_gpunn_plus(X_train, X_test, y_train, y_test, classifier):
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    import gpunn

    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    k = int(y_train.max()) + 1 if classifier else 1
    output = ("softmax" if k > 2 else "sigmoid") if classifier else "identity"
    n_val = len(X_train) // 10
    fit: dict = dict(
        epochs=EPOCHS, batch_size=BATCH, verbose=0, optimizer="adamw", weight_decay=0.01,
        lr=gpunn.schedules.cosine(LR * 3, EPOCHS, warmup=10), validation_data=(X_train[:n_val], y_train[:n_val]),
        callbacks=[gpunn.callbacks.EarlyStopping(patience=20)],
    )  # fmt: skip
    if classifier:
        fit["class_weight"] = "balanced"
    sizes = [X_train.shape[1], *HIDDEN, k if output == "softmax" else 1]
    m = gpunn.MLP(sizes, activation="gelu", output=output, seed=0, device="cpu", dropout=0.1)
    t0 = time.perf_counter()
    history = m.fit(X_train[n_val:], y_train[n_val:], **fit)
    seconds = time.perf_counter() - t0
    pred = np.asarray(gpunn._backend.to_numpy(m.predict(X_test)))
    return score(y_test, pred.reshape(-1) if not classifier else pred, classifier), seconds, history.epochs


RUNNERS = {"sklearn": run_sklearn, "gpunn": run_gpunn, "gpunn+": run_gpunn_plus}


def run_grid(rounds: int) -> list[dict]:
    """A 4-point grid, 5 folds, over the digits pipeline: GridSearchCV for both, and gpunn's MLPSearchCV."""
    import sklearn.neural_network
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler

    import gpunn.sklearn

    X, y = load_digits(return_X_y=True)
    grid = {f"mlpclassifier__{k}": v for k, v in GRID.items()}

    def search(name):
        if name == "gpunn MLPSearchCV":  # no pipeline: MLPSearchCV searches an estimator, so X is scaled first
            est = gpunn.sklearn.MLPClassifier(HIDDEN, max_iter=EPOCHS, random_state=0)
            return gpunn.sklearn.MLPSearchCV(est, GRID), StandardScaler().fit_transform(X)
        module = sklearn.neural_network if name == "sklearn GridSearchCV" else gpunn.sklearn
        return GridSearchCV(pipeline(module, True), grid), X

    names = ("sklearn GridSearchCV", "gpunn GridSearchCV", "gpunn MLPSearchCV")
    times: dict[str, list[float]] = {n: [] for n in names}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name in names:
            est, data = search(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                est.fit(data, y)
                times[name].append(time.perf_counter() - t0)
            best[name] = float(est.best_score_)
            print(f"grid {name:22s} best CV accuracy {best[name]:.4f}  {times[name][-1]:.2f} s", flush=True)
    return [{"search": n, "best_cv_accuracy": best[n], "seconds": statistics.median(times[n]), "all_seconds": times[n]}
            for n in names]  # fmt: skip


LBFGS_DATASETS = ("digits", "breast cancer", "wine")
LBFGS_RESULTS = RESULTS.with_name("datasets_lbfgs.json")


def run_lbfgs(module, X_train, X_test, y_train, y_test, classifier):
    """The L-BFGS pipeline of ``module`` (sklearn.neural_network or gpunn.sklearn): (accuracy, seconds, iterations,
    CPU seconds), the fit's wall-clock and CPU time (on a shared machine the wall-clock time also counts the waits
    for a core)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = make_pipeline(StandardScaler(), module.MLPClassifier((64,), solver="lbfgs", random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0, c0 = time.perf_counter(), time.process_time()
        est.fit(X_train, y_train)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return score(y_test, est.predict(X_test), classifier), seconds, int(est[-1].n_iter_), cpu


def lbfgs_main(rounds: int, path: Path, env: dict) -> None:
    """``--solver lbfgs``: scikit-learn's and gpunn's L-BFGS on the same pipelines, interleaved."""
    import sklearn.neural_network

    import gpunn.sklearn

    modules = {"sklearn": sklearn.neural_network, "gpunn": gpunn.sklearn}
    data = {name: split(X, y, True) for name, ((X, y), _) in datasets().items() if name in LBFGS_DATASETS}
    runs: dict[tuple[str, str], list] = {}
    for r in range(rounds):
        for name, parts in data.items():
            for contender, module in modules.items():
                value, seconds, iterations, cpu = run_lbfgs(module, *parts, True)
                runs.setdefault((name, contender), []).append((value, seconds, iterations, cpu))
                print(f"round {r + 1} {name:14s} {contender:8s} {value:.4f}  {seconds:.4f} s ({cpu:.4f} s CPU)  "
                      f"{iterations} iterations", flush=True)  # fmt: skip
    lines = [
        "| dataset | rows | sklearn accuracy | gpunn accuracy | sklearn s | gpunn s | gpunn / sklearn "
        "| CPU: gpunn / sklearn | iterations (sklearn, gpunn) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = []
    for name, parts in data.items():
        sk, gp = runs[(name, "sklearn")], runs[(name, "gpunn")]
        ratio = statistics.median(g[1] / s[1] for g, s in zip(gp, sk))
        cpu_ratio = statistics.median(g[3] / s[3] for g, s in zip(gp, sk) if s[3] > 0)
        row = {"dataset": name, "rows": int(len(parts[0]) + len(parts[1])), "ratio_to_sklearn": ratio,
               "cpu_ratio_to_sklearn": cpu_ratio}  # fmt: skip
        for contender, results in (("sklearn", sk), ("gpunn", gp)):
            row[contender] = {"accuracy": results[-1][0], "seconds": statistics.median(r[1] for r in results),
                              "all_seconds": [r[1] for r in results], "iterations": results[-1][2],
                              "cpu_seconds": statistics.median(r[3] for r in results)}  # fmt: skip
        rows.append(row)
        lines.append(f"| {name} | {row['rows']} | {sk[-1][0]:.4f} | {gp[-1][0]:.4f} | {row['sklearn']['seconds']:.4f} "
                     f"| {row['gpunn']['seconds']:.4f} | {ratio:.2f}x | {cpu_ratio:.2f}x "
                     f"| {sk[-1][2]}, {gp[-1][2]} |")  # fmt: skip
    env["load_average_after"] = os.getloadavg()
    print("\n" + "\n".join(lines))
    print(f"load average before {env['load_average']}, after {env['load_average_after']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "rounds": rounds, "rows": rows}, indent=1) + "\n")


def environment() -> dict:
    import numpy
    import sklearn
    from threadpoolctl import threadpool_info

    blas = [f"{p.get('internal_api')} {p.get('version')} x{p.get('num_threads')}" for p in threadpool_info()]
    return {"cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "blas": blas,
            "numpy": numpy.__version__, "sklearn": sklearn.__version__, "load_average": os.getloadavg()}  # fmt: skip


def table(rows: list[dict]) -> str:
    head = ["| dataset | rows | metric | sklearn | gpunn | gpunn+ | sklearn s | gpunn s | gpunn+ s | gpunn / sklearn "
            "| epochs (sklearn, gpunn, gpunn+) |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["contender"]: r for r in rows if r["dataset"] == name}
        sk, gp = by["sklearn"], by["gpunn"]
        head.append(
            f"| {name} | {sk['rows']} | {sk['metric']} | "
            + " | ".join(f"{by[c]['score']:.4f}" for c in CONTENDERS)
            + " | "
            + " | ".join(f"{by[c]['seconds']:.3f}" for c in CONTENDERS)
            + f" | {gp['ratio_to_sklearn']:.2f}x | "
            + ", ".join(str(by[c]["epochs"]) for c in CONTENDERS)
            + " |"
        )
    return "\n".join(head)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help=f"where to write the results (default {RESULTS})")
    parser.add_argument("--solver", choices=("adam", "lbfgs"), default="adam",
                        help="adam: the three contenders (default); lbfgs: scikit-learn's and gpunn's")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; times are medians (default 5)")
    parser.add_argument("--grid", action="store_true", help="also time a 4-point grid search on digits")
    parser.add_argument("--grid-rounds", type=int, default=1, help="rounds of the grid searches (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit every contender's BLAS to this many threads (default: as the environment sets)",
    )
    args = parser.parse_args(argv)
    limiter = None
    if args.threads is not None:  # every BLAS the contenders load, loaded first (the limit reaches only those)
        import scipy.linalg  # noqa: F401
        import sklearn.neural_network  # noqa: F401
        from threadpoolctl import threadpool_limits

        import gpunn.sklearn  # noqa: F401

        limiter = threadpool_limits(args.threads)
    env = environment()
    print(f"{env['cpus']} CPUs, BLAS {', '.join(env['blas'])}, load average {env['load_average']}", flush=True)
    if args.solver == "lbfgs":
        lbfgs_main(args.rounds, args.json or LBFGS_RESULTS, env)
        return
    args.json = args.json or RESULTS
    data = {name: (split(X, y, classifier), classifier) for name, ((X, y), classifier) in datasets().items()}
    runs: dict[tuple[str, str], list] = {}
    for r in range(args.rounds):
        for name, (parts, classifier) in data.items():
            for contender in CONTENDERS:
                value, seconds, epochs = RUNNERS[contender](*parts, classifier)
                runs.setdefault((name, contender), []).append((value, seconds, epochs))
                print(f"round {r + 1} {name:14s} {contender:8s} {value:.4f}  {seconds:.3f} s  {epochs} epochs",
                      flush=True)  # fmt: skip
    rows = []
    for (name, contender), results in runs.items():
        sk_seconds = [s for _, s, _ in runs[(name, "sklearn")]]
        parts, classifier = data[name]
        seconds = [s for _, s, _ in results]
        rows.append({"dataset": name, "contender": contender, "metric": "accuracy" if classifier else "R2",
                     "score": results[-1][0], "scores_equal_across_rounds": len({v for v, _, _ in results}) == 1,
                     "seconds": statistics.median(seconds), "all_seconds": seconds, "epochs": results[-1][2],
                     "ratio_to_sklearn": statistics.median(a / b for a, b in zip(seconds, sk_seconds)),
                     "rows": int(len(parts[0]) + len(parts[1]))})  # fmt: skip
    grid = run_grid(args.grid_rounds) if args.grid else []
    env["load_average_after"] = os.getloadavg()
    print("\n" + table(rows))
    for g in grid:
        print(f"grid {g['search']:22s} best CV accuracy {g['best_cv_accuracy']:.4f}  {g['seconds']:.2f} s")
    print(f"load average before {env['load_average']}, after {env['load_average_after']}")
    del limiter
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "rounds": args.rounds, "rows": rows, "grid": grid},
                                    indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
