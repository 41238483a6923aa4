"""gpunn's defaults on real tabular data: ``python -m benchmarks.tabular [--seeds N] [--datasets a,b] [--only gpunn]``.

Every dataset ships inside an installable package (nothing is downloaded): scikit-learn's bundled ones, the Palmer
penguins (``palmerpenguins``) and statsmodels' datasets (``pip install 'gpunn[bench]'``). On the same splits (a
stratified 75/25 split for classes, a plain one for regression, per seed) three learners are fitted with their
default settings:

- gpunn: ``MLP(preset="tabular")``, the recipe ``gpunn train --data FILE`` uses with no tuning flags;
- scikit-learn's usual pipeline: ``ColumnTransformer`` (``SimpleImputer`` + ``StandardScaler`` for numbers,
  ``SimpleImputer`` + ``OneHotEncoder`` for categories), then the default ``MLPClassifier`` / ``MLPRegressor``;
- ``HistGradientBoostingClassifier`` / ``Regressor`` with native categories (category-typed columns).

Every learner runs with one BLAS / OpenMP thread (``--threads``): on a small table, threads only wait on each
other, and on the shared 2-core machine that measured this they made a gpunn fit 30 times slower.

Reported: test accuracy (classes) or R^2 (regression), the mean over seeds, and the mean fit time in seconds, into
``benchmarks/results/tabular.json`` and as a Markdown table (docs/performance.md holds one).

gpunn takes each dataset as its data frame: text categories and empty cells are encoded by the model itself
(docs/data.md), learned from the training rows; the other two learners get scikit-learn's usual preprocessing.

``--recipe key=value`` overrides a setting of the preset (e.g. ``--recipe label_smoothing=0``), to measure a
variant; the defaults are what the table in the docs reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "tabular.json"


@dataclass
class Table:
    """A dataset: features as a DataFrame (categorical columns as pandas ``category``), the target, its task."""

    name: str
    X: Any
    y: np.ndarray
    task: str  # "classification" or "regression"
    source: str

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.X.columns if str(self.X[c].dtype) == "category"]


def _sklearn(name: str, task: str) -> Callable[[], Table]:
    def load() -> Table:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        return Table(name, bunch.data, bunch.target.to_numpy(), task, f"sklearn.datasets.load_{name}")

    return load


def _penguins() -> Table:
    from palmerpenguins import load_penguins

    df = load_penguins()
    df = df[df["species"].notna()]
    X = df.drop(columns=["species"])
    for c in ("island", "sex"):  # sex has empty cells: a category column with missing values
        X[c] = X[c].astype("category")
    return Table("penguins", X, df["species"].to_numpy().astype(str), "classification", "palmerpenguins")


def _statsmodels(name: str) -> Any:
    import importlib

    return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data


def _fair() -> Table:
    df = _statsmodels("fair")
    X = df.drop(columns=["affairs"])
    for c in ("occupation", "occupation_husb"):  # coded occupations: categories, not quantities
        X[c] = X[c].astype(int).astype(str).astype("category")
    y = (df["affairs"] > 0).to_numpy().astype(int)
    return Table("fair (affairs > 0)", X, y, "classification", "statsmodels.datasets.fair")


def _anes96() -> Table:
    df = _statsmodels("anes96")
    X = df.drop(columns=["vote"])
    return Table("anes96 (vote)", X, df["vote"].to_numpy().astype(int), "classification", "statsmodels.datasets.anes96")


def _grunfeld() -> Table:
    df = _statsmodels("grunfeld")
    X = df.drop(columns=["invest"])
    X["firm"] = X["firm"].astype(str).astype("category")
    return Table("grunfeld (invest)", X, df["invest"].to_numpy(), "regression", "statsmodels.datasets.grunfeld")


def _star98() -> Table:
    df = _statsmodels("star98")
    y = (df["NABOVE"] / (df["NABOVE"] + df["NBELOW"])).to_numpy()
    X = df.drop(columns=["NABOVE", "NBELOW"])
    return Table("star98 (share above)", X, y, "regression", "statsmodels.datasets.star98")


DATASETS: dict[str, Callable[[], Table]] = {
    "breast_cancer": _sklearn("breast_cancer", "classification"),
    "wine": _sklearn("wine", "classification"),
    "iris": _sklearn("iris", "classification"),
    "digits": _sklearn("digits", "classification"),
    "diabetes": _sklearn("diabetes", "regression"),
    "penguins": _penguins,
    "fair": _fair,
    "anes96": _anes96,
    "grunfeld": _grunfeld,
    "star98": _star98,
}


def _columns(t: Table) -> tuple[list[str], list[str]]:
    cat = t.categorical
    return [c for c in t.X.columns if c not in cat], cat


def _encoder(t: Table) -> Any:
    """scikit-learn's usual preprocessing: imputed and scaled numbers, imputed and one-hot encoded categories."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num, cat = _columns(t)
    parts = [("num", make_pipeline(SimpleImputer(), StandardScaler()), num)]
    if cat:
        parts.append(("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                           OneHotEncoder(handle_unknown="ignore")), cat))  # fmt: skip
    return ColumnTransformer(parts, sparse_threshold=0)


def _robust_scaling(X: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``--robust`` (an experiment, not the default): RealMLP's robust scaling with smooth clipping, learned on
    the training rows: (x - median) / (interquartile range, or half the 5-95% range where that is 0), then
    x / sqrt(1 + (x / 3)^2), before gpunn's own standardization."""
    median = np.median(X, axis=0)
    q = np.quantile(X, [0.05, 0.25, 0.75, 0.95], axis=0)
    spread = q[2] - q[1]
    spread = np.where(spread > 0, spread, (q[3] - q[0]) / 2)
    spread = np.where(spread > 0, spread, 1.0)

    def transform(A: np.ndarray) -> np.ndarray:
        z = (A - median) / spread
        return (z / np.sqrt(1 + (z / 3) ** 2)).astype(np.float32)

    return transform


def fit_gpunn(t: Table, X: Any, y: np.ndarray, seed: int, recipe: dict[str, Any]) -> Callable[[Any], np.ndarray]:
    from gpunn import MLP

    # A table with categories or empty cells goes to gpunn as it is (the model learns their encoding); a numeric
    # one as an array, which --robust may transform first.
    frame = bool(t.categorical) or bool(X.isna().any().any())
    robust = None
    if not frame:
        X = np.asarray(X, dtype=np.float32)
        robust = _robust_scaling(X) if recipe.get("robust") else None
        X = X if robust is None else robust(X)
    output = "identity" if t.task == "regression" else "sigmoid" if len(np.unique(y)) == 2 else "softmax"
    model = MLP(preset="tabular", output=output, seed=seed, device="cpu", **recipe.get("model", {}))
    model.fit(X, y, verbose=0, **recipe.get("fit", {}))

    def predict(Xt: Any) -> np.ndarray:
        if not frame:
            Xt = np.asarray(Xt, dtype=np.float32)
            Xt = Xt if robust is None else robust(Xt)
        pred = np.asarray(model.predict(Xt))
        return pred.reshape(len(Xt), -1)[:, 0] if output == "identity" else pred

    return predict


def fit_sklearn_mlp(t: Table, X: Any, y: np.ndarray, seed: int, recipe: dict[str, Any]) -> Callable[[Any], Any]:
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline

    mlp = MLPRegressor(random_state=seed) if t.task == "regression" else MLPClassifier(random_state=seed)
    pipe = make_pipeline(_encoder(t), mlp)
    with warnings.catch_warnings():  # the default 200 iterations often stop short of convergence: as users see it
        warnings.simplefilter("ignore")
        pipe.fit(X, y)
    return pipe.predict


def fit_hgb(t: Table, X: Any, y: np.ndarray, seed: int, recipe: dict[str, Any]) -> Callable[[Any], Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if t.task == "regression" else HistGradientBoostingClassifier
    model = cls(categorical_features="from_dtype", random_state=seed)
    model.fit(X, y)
    return model.predict


LEARNERS = {"gpunn": fit_gpunn, "sklearn MLP": fit_sklearn_mlp, "HGB": fit_hgb}


def _split(t: Table, seed: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    strat = t.y if t.task == "classification" else None
    return train_test_split(t.X, t.y, test_size=0.25, random_state=seed, stratify=strat)


def _score(t: Table, y: np.ndarray, pred: Any) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    pred = np.asarray(pred)
    if t.task == "regression":
        return float(r2_score(y, pred.astype(np.float64)))
    return float(accuracy_score(y.astype(str), pred.astype(str)))


def run(names: list[str], seeds: int, learners: list[str], recipe: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        t = DATASETS[name]()
        row: dict[str, Any] = {"dataset": t.name, "source": t.source, "task": t.task, "rows": len(t.X),
                               "features": t.X.shape[1], "categorical": len(t.categorical)}  # fmt: skip
        for learner in learners:
            scores, times = [], []
            for seed in range(seeds):
                X_train, X_test, y_train, y_test = _split(t, seed)
                start = time.perf_counter()
                predict = LEARNERS[learner](t, X_train, y_train, seed, recipe)
                times.append(time.perf_counter() - start)
                scores.append(_score(t, y_test, predict(X_test)))
            row[learner] = {"score": float(np.mean(scores)), "scores": scores, "fit_s": float(np.mean(times))}
        rows.append(row)
        print(_line(row, learners), flush=True)
    return rows


def _line(row: dict[str, Any], learners: list[str]) -> str:
    cat = f", {row['categorical']} categorical" if row["categorical"] else ""
    cells = [
        f"{row['dataset']} ({row['rows']}x{row['features']}{cat})",
        "acc" if row["task"] == "classification" else "R²",
    ]
    cells += [f"{row[k]['score']:.3f}" for k in learners]
    cells += [f"{row[k]['fit_s']:.2f}" for k in learners]
    return "| " + " | ".join(cells) + " |"


def table(rows: list[dict[str, Any]], learners: list[str]) -> str:
    head = ["dataset (rows x features)", "score", *learners, *(f"{k} fit s" for k in learners)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + [_line(r, learners) for r in rows])


def _recipe(items: list[str]) -> dict[str, Any]:
    """``--recipe key=value`` items, as MLP (``model``) and fit (``fit``) arguments."""
    from gpunn import presets

    out: dict[str, Any] = {"model": {}, "fit": {}}
    for item in items:
        key, _, text = item.partition("=")
        value = json.loads(text) if text not in ("", "None") else None
        if key.startswith("preset."):  # a field of the preset itself, such as preset.validation_split=0.1
            presets.TABULAR = dataclasses.replace(presets.TABULAR, **{key[len("preset.") :]: value})
            continue
        out["model" if key in presets.MODEL_SETTINGS else "fit"][key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--only", default=",".join(LEARNERS), help="learners, comma-separated")
    p.add_argument("--recipe", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--robust", action="store_true", help="experiment: robust scaling with smooth clipping first")
    p.add_argument("--threads", type=int, default=1, help="BLAS and OpenMP threads of every learner (default: 1)")
    args = p.parse_args(argv)
    learners = args.only.split(",")
    # the limit reaches only the libraries loaded when it is set: scikit-learn's OpenMP (HGB) too
    import sklearn.ensemble  # noqa: F401
    import sklearn.neural_network  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):
        rows = run(args.datasets.split(","), args.seeds, learners, {**_recipe(args.recipe), "robust": args.robust})
    print(table(rows, learners))
    if not args.no_save and not args.recipe and not args.robust:
        RESULTS.write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
