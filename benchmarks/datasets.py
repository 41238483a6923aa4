"""The real datasets scikit-learn ships, through gpunn and scikit-learn's MLPs on the same split:
``python -m benchmarks.datasets`` (needs scikit-learn).

Each dataset is split 75/25 (stratified for classifiers, seed 0) and standardized with the training rows'
statistics (the regression target too). Three contenders train a 64-32 ReLU network with Adam (lr 1e-3,
batches of 200, 300 epochs):

- **sklearn**: ``MLPClassifier`` / ``MLPRegressor`` with those settings (``alpha=0``, no early stopping);
- **gpunn**: ``MLP`` with the same settings;
- **gpunn+**: the features users ask for: GELU, dropout 0.1, AdamW (weight decay 0.01), a cosine schedule
  peaking at 3e-3 after 10 warm-up epochs, early stopping on 10% of the training rows (patience 20, best epoch
  restored) and, for classifiers, balanced class weights.

The score is the test accuracy (classifiers) or R^2 (regression), the time the wall-clock seconds of ``fit``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "datasets.json"
EPOCHS, LR, BATCH, HIDDEN = 300, 1e-3, 200, (64, 32)


def datasets():
    from sklearn import datasets as d

    return {
        "breast cancer": (d.load_breast_cancer(return_X_y=True), True),
        "digits": (d.load_digits(return_X_y=True), True),
        "wine": (d.load_wine(return_X_y=True), True),
        "diabetes": (d.load_diabetes(return_X_y=True), False),
    }


def split(X, y, classifier):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    parts = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y if classifier else None)
    X_train, X_test, y_train, y_test = parts
    scaler = StandardScaler().fit(X_train)
    if not classifier:  # the target too, with the training rows' statistics (R^2 does not change)
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def score(y_true, y_pred, classifier) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    return float(accuracy_score(y_true, y_pred) if classifier else r2_score(y_true, y_pred))


def run_sklearn(X_train, X_test, y_train, y_test, classifier):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = MLPClassifier if classifier else MLPRegressor
    est = cls(hidden_layer_sizes=HIDDEN, solver="adam", learning_rate_init=LR, batch_size=BATCH, max_iter=EPOCHS,
              alpha=0.0, tol=0.0, n_iter_no_change=EPOCHS + 1, random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X_train, y_train)
        seconds = time.perf_counter() - t0
    return score(y_test, est.predict(X_test), classifier), seconds, EPOCHS


def run_gpunn(X_train, X_test, y_train, y_test, classifier, plus: bool):
    import gpunn

    k = int(y_train.max()) + 1 if classifier else 1
    output = ("softmax" if k > 2 else "sigmoid") if classifier else "identity"
    sizes = [X_train.shape[1], *HIDDEN, k if output == "softmax" else 1]
    fit: dict = dict(epochs=EPOCHS, lr=LR, batch_size=BATCH, optimizer="adam", verbose=0)
    activation = "relu"
    if plus:
        activation = "gelu"
        n_val = len(X_train) // 10
        fit.update(
            optimizer="adamw", weight_decay=0.01, lr=gpunn.schedules.cosine(LR * 3, EPOCHS, warmup=10),
            validation_data=(X_train[:n_val], y_train[:n_val]),
            callbacks=[gpunn.callbacks.EarlyStopping(patience=20)],
        )  # fmt: skip
        if classifier:
            fit["class_weight"] = "balanced"
        X_train, y_train = X_train[n_val:], y_train[n_val:]
    m = gpunn.MLP(sizes, activation=activation, output=output, seed=0, device="cpu", dropout=0.1 if plus else 0.0)
    t0 = time.perf_counter()
    history = m.fit(X_train, y_train, **fit)
    seconds = time.perf_counter() - t0
    pred = gpunn._backend.to_numpy(m.predict(X_test))
    return score(y_test, pred.reshape(-1) if not classifier else pred, classifier), seconds, history.epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    args = parser.parse_args(argv)
    rows = []
    for name, ((X, y), classifier) in datasets().items():
        parts = split(X, y, classifier)
        for contender in ("sklearn", "gpunn", "gpunn+"):
            if contender == "sklearn":
                value, seconds, epochs = run_sklearn(*parts, classifier)
            else:
                value, seconds, epochs = run_gpunn(*parts, classifier, plus=contender == "gpunn+")
            rows.append({"dataset": name, "contender": contender, "metric": "accuracy" if classifier else "R2",
                         "score": value, "seconds": seconds, "epochs": epochs, "rows": int(len(X))})  # fmt: skip
            print(f"{name:14s} {contender:8s} {rows[-1]['metric']} {value:.4f}  {seconds:.2f} s  {epochs} epochs")
    lines = ["| dataset | rows | contender | test score | epochs | seconds |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['rows']} | {r['contender']} | {r['metric']} {r['score']:.4f} | "
                     f"{r['epochs']} | {r['seconds']:.2f} |")  # fmt: skip
    print("\n" + "\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
