"""Export a trained :class:`gpunn.MLP` to ONNX, to run it without gpunn (onnxruntime, TensorRT, OpenVINO, ...).

The graph computes what :meth:`MLP.predict_proba` and :meth:`MLP.predict` compute, from the same weights:

- input ``X``: (batch, n_features), of the model's dtype (float32 or float64), any batch size;
- the model's standardization, ``(X - mean) / std``, when it has one;
- one ``Gemm`` per dense layer (``a @ W.T + b``: W is stored (out, in), hence ``transB=1``), each hidden layer
  followed by its activation in ONNX operators (float32: Relu, Tanh, Sigmoid, LeakyRelu, Elu, Softplus, and
  Gelu from opset 20; float64 graphs build leaky_relu, elu, softplus, gelu and silu from elementary operators
  with float64 constants: ONNX's float attributes are float32, and onnxruntime lacks float64 kernels for some);
- output ``probabilities`` (sigmoid or softmax output) or ``values`` (identity output; exp(z), the Poisson mean,
  for an exp output), (batch, n_outputs);
- output ``label`` (int64) for classifiers: the argmax of the logits for softmax, (batch,); for sigmoid
  ``logit > 0`` (probability above 0.5), (batch,) with one output unit and (batch, k) with several (multi-label).
  A regression model (identity or exp output) has no ``label``.

The sigmoid output is computed as gpunn computes it (from ``exp(-|z|)``), so its small probabilities keep their
relative precision, as ``predict_proba``'s do. Needs ``pip install 'gpunn[onnx]'``.

gpunn's ``predict`` refuses a row holding NaN or inf; the graph cannot refuse one. By default such a row's
``label`` is 0 (``ArgMax`` and ``Greater`` of NaN logits), as if it were a prediction. With ``nan_label=``, the
graph flags the rows with a NaN or inf feature, or a NaN logit: their ``label`` is ``nan_label`` and their
``probabilities`` (``values``) are NaN.

An :class:`gpunn.Ensemble` exports as one graph that computes every member at once (:func:`ensemble_network`):
each dense layer is one batched ``MatMul`` over the K members' stacked weights, and the outputs are the members'
mean (``probabilities`` or ``values``, as :meth:`Ensemble.predict_proba` gives it), the ``label`` of the mean
probabilities (:meth:`Ensemble.predict`), and ``std``, the members' standard deviation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import layers, losses
from ._version import __version__
from .errors import ConfigError, NotFittedError
from .feed.spec import Spec

MIN_OPSET = 13  # Softmax over one axis and Squeeze with its axes as an input
DEFAULT_OPSET = 17  # conservative: runtimes a few years old read it too
GELU_OPSET = 20  # the first opset with Gelu(approximate="tanh"); below it gelu is built from Tanh, Mul, Add

ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 2  # LabelEncoder with string keys and int64 values: a table's categories
_INSTALL = "ONNX export needs the onnx package: pip install 'gpunn[onnx]'"


@dataclass(frozen=True)
class Network:
    """What an exported graph is built from: the model's :class:`~gpunn.feed.Spec`, its weights ``[(W, b), ...]``
    as NumPy arrays (``W`` of shape (out, in)), its feature scaling ``(mean, std)`` or None, what the file's
    metadata records besides (the target's name, the class labels), and a standardized target's ``(mean, std)``.
    A spec that holds its classes (labels other than the indices 0..k-1) makes ``label`` give them."""

    spec: Spec
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]
    scaling: tuple[np.ndarray, np.ndarray] | None = None
    target_name: str | None = None
    classes: Any = None
    target_scaling: tuple[np.ndarray, np.ndarray] | None = None  # a standardized regression target's (mean, std)


@dataclass(frozen=True)
class EnsembleNetwork:
    """What an ensemble's graph is built from: K members of one shape, their arrays stacked along a first axis.

    ``weights`` is ``[(W, b), ...]`` with ``W`` of shape (K, out, in) and ``b`` (K, out); ``scaling`` is the
    feature scaling ``(mean, std)`` of shape (n_features,) when the members share it (as members trained together
    do) or (K, n_features) when they differ, or None; ``target_scaling`` a standardized regression target's
    ``(mean, std)``, each (K, n_outputs), or None. ``spec``, ``target_name`` and ``classes`` are member 0's, the
    members agreeing on the spec's shape and classes (:func:`ensemble_network` checks it)."""

    spec: Spec
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]
    scaling: tuple[np.ndarray, np.ndarray] | None = None
    target_name: str | None = None
    classes: Any = None
    target_scaling: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def members(self) -> int:
        return int(self.weights[0][0].shape[0])


def network(model: Any) -> Network | EnsembleNetwork:
    """The :class:`Network` of a trained model (an :class:`~gpunn.MLP`, or anything with its attributes), or the
    :class:`EnsembleNetwork` of an :class:`~gpunn.Ensemble` (anything whose ``members`` are MLPs)."""
    if isinstance(model, (Network, EnsembleNetwork)):
        return model
    if isinstance(getattr(model, "members", None), list):  # an Ensemble: the members that did not diverge
        return ensemble_network(getattr(model, "live", model.members))
    if not all(hasattr(model, a) for a in ("numpy_weights", "spec", "scaling", "fitted")):
        raise ConfigError(f"ONNX export takes a gpunn.MLP; got {type(model).__name__}")
    if not model.fitted:
        raise NotFittedError("this MLP has not been trained yet: call fit(), set_weights() or gpunn.load() first")
    return Network(
        model.spec,
        tuple(model.numpy_weights()),
        model.scaling,
        model.target_name,
        list(model.spec.classes) if model.spec.classes is not None else model.metadata.get("classes"),
        getattr(model, "target_scaling", None),
    )


def ensemble_network(members: Any) -> EnsembleNetwork:
    """The :class:`EnsembleNetwork` of a list of trained members (:class:`~gpunn.MLP` objects or their
    :class:`Network`), which must agree on their widths, activations, output, dtype and classes: the members
    of an :class:`~gpunn.Ensemble` (``ens.members``), or any of them (a member count of 1 is an ensemble too)."""
    if isinstance(members, (str, bytes)) or not isinstance(members, (list, tuple)) or not members:
        raise ConfigError(f"ensemble_network takes a non-empty list of trained gpunn.MLP members; got {members!r}")
    nets = []
    for i, m in enumerate(members):
        if isinstance(m, EnsembleNetwork) or isinstance(getattr(m, "members", None), list):
            raise ConfigError(f"member {i} is an ensemble; ensemble_network takes the members themselves")
        if not isinstance(m, Network) and getattr(m, "fitted", True) is False:
            raise NotFittedError(f"member {i} has not been trained yet: call fit(), set_weights() or gpunn.load()")
        nets.append(network(m))
    first = nets[0]
    for i, net in enumerate(nets[1:], 1):
        for name in ("sizes", "activation", "output", "dtype", "classes"):
            if getattr(net.spec, name) != getattr(first.spec, name):
                raise ConfigError(f"member {i} has {name} {getattr(net.spec, name)!r}, member 0 "
                                  f"{getattr(first.spec, name)!r}; an ensemble's members share them")  # fmt: skip
    scaling = _stacked_scalings([net.scaling for net in nets], first.spec.n_features)
    if scaling is not None and all(np.array_equal(row, scaling[j][0]) for j in (0, 1) for row in scaling[j]):
        scaling = (scaling[0][0], scaling[1][0])  # shared: X scaled once, as Ensemble.predict scales it
    return EnsembleNetwork(
        first.spec,
        tuple(
            (np.stack([net.weights[i][0] for net in nets]), np.stack([net.weights[i][1] for net in nets]))
            for i in range(len(first.weights))
        ),
        scaling,
        first.target_name,
        first.classes,
        _stacked_scalings([net.target_scaling for net in nets], first.spec.n_outputs),
    )


def _stacked_scalings(pairs: list[Any], n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The members' ``(mean, std)`` pairs stacked, each (K, n), or None when no member has one; a member without
    one gets (0, 1), which is what having none does."""
    if all(pair is None for pair in pairs):
        return None
    pairs = [(np.zeros(n), np.ones(n)) if pair is None else pair for pair in pairs]
    return np.stack([np.asarray(p[0]) for p in pairs]), np.stack([np.asarray(p[1]) for p in pairs])


def to_onnx(
    model: Any,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    classes: Any = None,
    two_column_binary: bool = False,
    nan_label: Any = None,
) -> str:
    """Write ``model`` as an ONNX graph to ``path`` (atomically: a temporary file, then a rename); return the path.

    Parameters
    ----------
    model : gpunn.MLP or gpunn.Ensemble
        A trained model (``fit``, ``set_weights`` or ``gpunn.load``), on any namespace or device; or its
        :func:`network` (an :func:`ensemble_network` of some of an ensemble's members, say).
    path : str or os.PathLike
        The ``.onnx`` file to write.
    opset : int, optional
        The ONNX operator set, from 13 to the newest one the installed ``onnx`` knows; default 17. From 20 on,
        gelu in a float32 model is one ``Gelu(approximate="tanh")`` node.
    classes : sequence, optional
        The labels of a single-label classifier's classes, in order (integers, floats or strings): ``label``
        then gives ``classes[index]`` instead of the index, as ``gpunn.sklearn.MLPClassifier.predict`` does. By
        default, the labels the model holds (``model.classes``, when they are not the indices 0..k-1).
    two_column_binary : bool
        With one sigmoid output, ``probabilities`` holds ``[1 - p, p]``, (batch, 2), as scikit-learn's
        ``predict_proba`` does.
    nan_label : int, float or str, optional
        The ``label`` of a row that holds a NaN or infinite feature, or whose logits are NaN, which gpunn's
        ``predict`` would refuse: by default such a row gets label 0 (the argmax, or ``logit > 0``, of NaN).
        With ``nan_label`` the graph flags those rows, gives them this label and NaN ``probabilities``: -1, say,
        for index labels (an integer that is no index), NaN or a float for float ``classes``, a string for
        string ``classes``; never one of the labels. A regression model (identity or exp output) has no label: there
        ``nan_label=float("nan")`` makes the flagged rows' ``values`` NaN.

    The graph's input is ``X`` (batch, n_features) of the model's dtype; its outputs are ``probabilities`` (or
    ``values`` for an identity output, exp(z) for an exp output) and, for classifiers, the int64 ``label`` that
    ``predict`` gives; an ensemble's graph gives them from the members' mean, as :meth:`Ensemble.predict_proba` and
    :meth:`Ensemble.predict` do, and adds ``std``, (batch, n_outputs): the members' (population) standard deviation
    of the values for a regression, of each probability for a classifier. Raises
    :class:`NotFittedError` for an untrained model, :class:`ConfigError` if onnx is missing, for an opset out of
    range or an activation ONNX cannot express, and ``OSError`` naming ``path`` if it cannot be written.
    """
    from .checkpoint import atomic_write

    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"path must be a file path (str or os.PathLike); got {path!r}")
    proto = onnx_model(model, opset=opset, classes=classes, two_column_binary=two_column_binary, nan_label=nan_label)
    atomic_write(path, proto.SerializeToString())
    return os.fspath(path)


def onnx_model(
    model: Any, *, opset: int | None = None, classes: Any = None, two_column_binary: bool = False, nan_label: Any = None
) -> Any:
    """The ONNX ``ModelProto`` that :func:`to_onnx` writes, checked by ``onnx.checker``, kept in memory (for
    ``onnxruntime.InferenceSession(proto.SerializeToString())``, or to edit before saving)."""
    net = network(model)
    model = net.spec  # below, only what the spec says of the model
    if classes is None and model.classes is not None:  # a model fitted on labels: label gives them, as predict
        classes = list(model.classes)
    onnx = _import_onnx()
    opset = _opset(opset, onnx)
    single_label = model.output == "softmax" or (model.output == "sigmoid" and model.n_outputs == 1)
    labels = None if classes is None else _class_labels(classes, model, single_label, onnx)
    flag = None if nan_label is None else _nan_label(nan_label, model, labels)
    names = layers.per_layer(model.activation, len(model.sizes) - 2)
    activation = model.activation if isinstance(model.activation, str) else list(model.activation)
    for i, name in enumerate(names):
        if name not in _ACTIVATIONS:
            raise ConfigError(f"activation {name!r} of hidden layer {i + 1} has no ONNX form in gpunn's exporter")

    g = _Graph(onnx, model.dtype, opset)
    members = net.members if isinstance(net, EnsembleNetwork) else None
    x, inputs = "X", [onnx.helper.make_tensor_value_info("X", g.elem_type, ["batch", model.n_features])]
    if model.encoding is not None:  # one input per column of the table, encoded in the graph as predict does
        x, inputs = _encoded(g, model.encoding)
    z = _logits(g, net, names, x)  # (batch, k); an ensemble's every member's, (K, batch, k)

    batch, k = "batch", model.n_outputs
    float_type = g.elem_type
    int64 = onnx.TensorProto.INT64
    outputs = []
    # (batch, 1) bool: the rows nan_label applies to
    bad = None if flag is None else _flagged_rows(g, x, z, stacked=members is not None)
    regression = model.output in losses.REGRESSION
    result = "values" if regression else "probabilities"
    shown = result if bad is None else f"{result}_computed"  # then NaN where flagged, into ``result``
    two_columns = two_column_binary and model.output == "sigmoid" and k == 1
    width = 2 if two_columns else k
    if members is not None:
        if model.output == "identity":
            p = z
        elif model.output == "exp":
            p = g.op("Exp", [z])
        else:
            p = g.op("Softmax", [z], axis=-1) if model.output == "softmax" else _probability(g, z)
        score, spread = _mean_and_std(g, p, members)
        threshold = 0.5  # labels from the members' mean probabilities, as Ensemble.predict gives them
        if two_columns:
            g.op("Concat", [g.op("Sub", [g.scalar(1.0), score]), score], out=shown, axis=1)
            spread = g.op("Concat", [spread, spread], axis=1)
        else:
            g.op("Identity", [score], out=shown)
        g.op("Identity", [spread], out="std" if bad is None else "std_computed")
    else:
        score, threshold = z, 0.0  # labels from the logits: p > 0.5 exactly when z > 0
        if model.output == "identity":
            g.op("Identity", [z], out=shown)
        elif model.output == "exp":
            g.op("Exp", [z], out=shown)
        elif model.output == "softmax":
            g.op("Softmax", [z], out=shown, axis=1)
        elif two_columns:
            p = _probability(g, z, out="positive")
            g.op("Concat", [g.op("Sub", [g.scalar(1.0), p]), p], out=shown, axis=1)
        else:
            _probability(g, z, out=shown)
    if regression:
        outputs.append(("values", float_type, [batch, k]))
    else:
        # the label before nan_label's Where and before the classes' Gather
        label = "label" if labels is None and bad is None else "label_index"
        if model.output == "softmax":
            g.op("ArgMax", [score], out=label, axis=1, keepdims=0)  # the first maximum, as numpy's argmax
            label_shape: list[Any] = [batch]
        else:
            positive = g.op("Cast", [g.op("Greater", [score, g.scalar(threshold)])], to=int64)
            if k == 1:
                g.op("Squeeze", [positive, g.const("label.axes", np.array([1], dtype=np.int64))], out=label)
                label_shape = [batch]
            else:
                g.op("Identity", [positive], out=label)
                label_shape = [batch, k]
        label_type = int64
        if labels is not None:
            g.initializers.append(onnx.numpy_helper.from_array(labels, "classes"))
            label = g.op("Gather", ["classes", label], out="label" if bad is None else "label_gathered", axis=0)
            label_type = onnx.helper.np_dtype_to_tensor_dtype(labels.dtype) if labels.dtype != object else (
                onnx.TensorProto.STRING)  # fmt: skip
        if bad is not None and flag is not None:
            rows = bad if len(label_shape) == 2 else g.op("Squeeze", [bad, "flag.axes"])  # (batch,) labels
            g.initializers.append(onnx.numpy_helper.from_array(flag, "nan_label"))
            g.op("Where", [rows, "nan_label", label], out="label")
        outputs += [("probabilities", float_type, [batch, width]), ("label", label_type, label_shape)]
    if members is not None:
        outputs.append(("std", float_type, [batch, width]))
    if bad is not None:
        g.op("Where", [bad, g.scalar(float("nan")), shown], out=result)
        if members is not None:
            g.op("Where", [bad, g.scalar(float("nan")), "std_computed"], out="std")

    helper = onnx.helper
    graph = helper.make_graph(
        g.nodes,
        "gpunn_mlp" if members is None else "gpunn_ensemble",
        inputs,
        [helper.make_tensor_value_info(name, elem, shape) for name, elem, shape in outputs],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    if model.encoding is not None:
        opsets.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="gpunn",
        producer_version=__version__,
        doc_string=f"gpunn {'MLP' if members is None else f'ensemble of {members} MLPs'} {list(model.sizes)}, "
        f"activation {activation}, {model.output} output, {model.dtype}",
    )
    metadata = {
        "sizes": list(model.sizes),
        "activation": activation,
        "output": model.output,
        "dtype": model.dtype,
        "feature_names": None if model.feature_names is None else list(model.feature_names),
        "target_name": net.target_name,
        "classes": net.classes,  # the model's class labels (label gives them when the model holds them)
        "nan_label": None if flag is None else _json_label(flag),  # the label of flagged rows (None: not flagged)
    }
    if model.encoding is not None:
        metadata["encoding"] = model.encoding.to_dict()
    if members is not None:
        metadata["members"] = members
    helper.set_model_props(proto, {f"gpunn.{key}": json.dumps(value) for key, value in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _class_labels(classes: Any, model: Any, single_label: bool, onnx: Any) -> np.ndarray:
    """``classes`` as the array the graph's ``label`` is gathered from: int64, float64 or strings."""
    if not single_label:
        raise ConfigError(
            f"classes= names the labels of a single-label classifier; this model's {model.output} output with "
            f"{model.n_outputs} units gives "
            f"{'values' if model.output in losses.REGRESSION else 'one 0/1 label per unit'}"
        )
    a = np.asarray(classes)
    expected = 2 if model.n_outputs == 1 else model.n_outputs
    if a.ndim != 1 or len(a) != expected:
        raise ConfigError(f"classes= must list the model's {expected} classes in order; got shape {a.shape}")
    if a.dtype.kind in "biu":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    if a.dtype.kind in "USO":
        return np.array([str(c) for c in a], dtype=object)
    raise ConfigError(f"classes= must hold integers, floats or strings; got dtype {a.dtype}")


def _nan_label(value: Any, model: Any, labels: np.ndarray | None) -> np.ndarray:
    """``nan_label`` as a 0-d array of the ``label`` output's type, checked to be no label the model gives."""
    if model.output in losses.REGRESSION:
        if isinstance(value, float) and np.isnan(value):
            return np.array(value, dtype=model.dtype)
        raise ConfigError(
            f"a regression model ({model.output} output) has no label: nan_label=float('nan') makes the values of rows "
            f"holding NaN or inf NaN; got nan_label={value!r}"
        )
    if labels is None:
        given = np.arange(model.n_outputs if model.output == "softmax" else 2)
        kind, wanted = "iu", "an integer (like -1)"
    elif labels.dtype == object:
        given, kind, wanted = labels, "U", "a string"
    else:
        given = labels
        kind, wanted = ("iu", "an integer") if labels.dtype.kind in "iu" else ("iuf", "a float (like NaN)")
    a = np.asarray(value)
    if a.ndim != 0 or a.dtype.kind not in kind:
        raise ConfigError(f"nan_label must be {wanted}, of the type of the graph's labels; got {value!r}")
    if any(a == g for g in given):
        shown = ", ".join(map(repr, given.tolist()[:10]))
        raise ConfigError(f"nan_label={value!r} is one of the labels the model gives ({shown}): choose another value")
    if labels is None or labels.dtype.kind in "iu":
        return a.astype(np.int64)
    return np.array(str(value), dtype=object) if labels.dtype == object else a.astype(np.float64)


def _json_label(flag: np.ndarray) -> Any:
    value = flag.item()
    return "NaN" if isinstance(value, float) and np.isnan(value) else value  # JSON has no NaN


def _flagged_rows(g: _Graph, x: str, z: str, stacked: bool) -> str:
    """(batch, 1) bool: the rows of ``x`` holding a NaN or infinite value, or whose logits ``z`` hold a NaN (for
    an ensemble, ``stacked``, a NaN in any member's logits, (K, batch, k))."""
    axes = g.const("flag.axes", np.array([1], dtype=np.int64))
    features = g.op("Cast", [g.op("Or", [g.op("IsNaN", [x]), g.op("IsInf", [x])])], to=g.elem_type)
    logits = g.op("Cast", [g.op("IsNaN", [z])], to=g.elem_type)
    if stacked:
        logits = g.op("ReduceSum", [logits, g.members_axis()], keepdims=0)
    counts = [g.op("ReduceSum", [count, axes], keepdims=1) for count in (features, logits)]
    return g.op("Greater", [g.op("Add", counts), g.scalar(0.0)])


def _encoded(g: _Graph, encoding: Any) -> tuple[str, list[Any]]:
    """The graph's inputs for a model with an encoding, one (batch, 1) per column named after it (numbers in the
    model's dtype, text as strings), and the name of their encoding, (batch, width), as
    :meth:`gpunn.feed.encode.Encoding.apply` computes it: an empty cell (NaN; ``""`` in a text column) imputed
    with ``IsNaN`` and ``Where`` and flagged by a 0/1 column, a category one-hot from its index (``LabelEncoder``
    of ai.onnx.ml: a rare category the "other" column's, an unseen one -1, which no column equals)."""
    helper, parts, inputs = g.onnx.helper, [], []
    for i, f in enumerate(encoding.features):
        if f.kind == "number":
            inputs.append(helper.make_tensor_value_info(f.name, g.elem_type, ["batch", 1]))
            empty = g.op("IsNaN", [f.name])
            parts.append(g.op("Where", [empty, g.const(f"encoding.{i}.fill", np.array(f.fill)), f.name]))
            if f.indicator:
                parts.append(g.op("Cast", [empty], to=g.elem_type))
            continue
        inputs.append(helper.make_tensor_value_info(f.name, g.onnx.TensorProto.STRING, ["batch", 1]))
        keys = [*f.categories, *f.rare]
        values = [*range(len(f.categories)), *[len(f.categories)] * len(f.rare)]
        index = g.op("LabelEncoder", [f.name], domain=ML_DOMAIN, keys_strings=keys, values_int64s=values,
                     default_int64=-1)  # fmt: skip
        columns = g.const(f"encoding.{i}.columns", np.arange(f.width, dtype=np.int64))
        parts.append(g.op("Cast", [g.op("Equal", [index, columns])], to=g.elem_type))
    encoded = parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1)
    return encoded, inputs


def _logits(g: _Graph, net: Network | EnsembleNetwork, names: Sequence[str], x: str = "X") -> str:
    """The output layer's logits from ``x`` (the input ``X``, or a table's encoded columns): (batch, k) through
    one ``Gemm`` per layer; for an ensemble every member's, (K, batch, k), through one batched ``MatMul`` per
    layer over the members' stacked weights."""
    stacked = isinstance(net, EnsembleNetwork)
    if net.scaling is not None:
        mean, std = (np.asarray(t) for t in net.scaling)
        if mean.ndim == 2:  # members scaled apart: (K, 1, n) broadcasts X to every member's (K, batch, n)
            mean, std = mean[:, None, :], std[:, None, :]
        x = g.op("Sub", [x, g.const("scaling.mean", mean)])
        x = g.op("Div", [x, g.const("scaling.std", std)])
    weights = list(net.weights)
    if net.target_scaling is not None:  # a standardized regression target: predict's values, scaled back here
        mean, std = (np.asarray(t, dtype=np.float64) for t in net.target_scaling)
        w, b = weights[-1]  # std[..., None] scales W's rows: (out, 1), or each member's (K, out, 1)
        weights[-1] = ((w * std[..., None]).astype(w.dtype), (b * std + mean).astype(b.dtype))
    z = x
    for i, (w, b) in enumerate(weights):
        if stacked:  # W stored (K, in, out), so that a @ W.T for all K members is one MatMul, with no Transpose
            z = g.op("MatMul", [z, g.const(f"layers.{i}.weight_t", np.swapaxes(w, 1, 2))])
            z = g.op("Add", [z, g.const(f"layers.{i}.bias", b[:, None, :])])
        else:
            z = g.op("Gemm", [z, g.const(f"layers.{i}.weight", w), g.const(f"layers.{i}.bias", b)], transB=1)
        if i < len(weights) - 1:
            z = _ACTIVATIONS[names[i]](g, z)
    return z


def _mean_and_std(g: _Graph, p: str, members: int) -> tuple[str, str]:
    """The mean and the standard deviation over the members of their outputs ``p`` (K, batch, k), each (batch, k):
    the population standard deviation (divided by K, as ``numpy.std``), 0 for one member. ReduceSum takes its
    axes as an input from opset 13 on (ReduceMean only from 18), so both divide a sum by K."""
    count, axis = g.scalar(float(members)), g.members_axis()
    mean = g.op("Div", [g.op("ReduceSum", [p, axis], keepdims=0), count])
    deviation = g.op("Sub", [p, mean])
    variance = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [deviation, deviation]), axis], keepdims=0), count])
    return mean, g.op("Sqrt", [variance])


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as exc:
        raise ConfigError(f"{_INSTALL} ({exc})") from None
    return onnx


def _opset(opset: Any, onnx: Any) -> int:
    newest = int(onnx.defs.onnx_opset_version())
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(
            f"opset must be an integer from {MIN_OPSET} to {newest} (the newest the installed onnx "
            f"{onnx.__version__} knows); got {opset!r}"
        )
    return int(opset)


class _Graph:
    """Nodes and initializers of the graph being built; every intermediate gets a fresh name."""

    def __init__(self, onnx: Any, dtype: str, opset: int):
        self.onnx, self.dtype, self.opset = onnx, np.dtype(dtype), opset
        # ONNX's float attributes (LeakyRelu's alpha) are float32, onnxruntime has no float64 Elu, Softplus or
        # Gelu, and 1.19 fuses z * Sigmoid(z) into a float32-only kernel: float64 graphs build these activations
        # from elementary operators with float64 constants.
        self.named_ops = self.dtype == np.float32
        self.elem_type = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._scalars: dict[float, str] = {}
        self._members_axis = ""

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attributes: Any) -> str:
        """Append a node; returns the name of its output."""
        index = len(self.nodes)
        out = out or f"{op_type.lower()}_{index}"
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=f"{op_type}_{index}", **attributes))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer holding ``value`` (floats in the model's dtype, integers as they are)."""
        a = np.asarray(value)
        if a.dtype.kind == "f":
            a = a.astype(self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def scalar(self, value: float) -> str:
        """A 0-d constant of the model's dtype, one initializer per distinct value."""
        if value not in self._scalars:
            self._scalars[value] = self.const(f"c{len(self._scalars)}", np.array(value))
        return self._scalars[value]

    def members_axis(self) -> str:
        """The int64 axes input ``[0]`` that reduces an ensemble's (K, batch, k) outputs over its members."""
        if not self._members_axis:
            self._members_axis = self.const("members.axes", np.array([0], dtype=np.int64))
        return self._members_axis


def _probability(g: _Graph, z: str, out: str | None = None) -> str:
    """gpunn's sigmoid of the output (:func:`gpunn.losses.probability`): 1 / (1 + e) for z >= 0 and e / (1 + e)
    below, e = exp(-|z|), exact in both tails and never overflowing."""
    e = g.op("Exp", [g.op("Neg", [g.op("Abs", [z])])])
    d = g.op("Add", [g.scalar(1.0), e])
    upper = g.op("Div", [g.scalar(1.0), d])
    lower = g.op("Div", [e, d])
    return g.op("Where", [g.op("GreaterOrEqual", [z, g.scalar(0.0)]), upper, lower], out=out)


def _gelu(g: _Graph, z: str) -> str:
    """gpunn's gelu, the tanh approximation 0.5 z (1 + tanh(c (z + 0.044715 z^3))), c = sqrt(2 / pi)."""
    if g.opset >= GELU_OPSET and g.named_ops:
        return g.op("Gelu", [z], approximate="tanh")
    cube = g.op("Mul", [g.op("Mul", [z, z]), z])
    inner = g.op("Add", [z, g.op("Mul", [g.scalar(0.044715), cube])])
    t = g.op("Tanh", [g.op("Mul", [g.scalar(float(layers._GELU_C)), inner])])
    half_z = g.op("Mul", [g.scalar(0.5), z])
    return g.op("Mul", [half_z, g.op("Add", [g.scalar(1.0), t])])


def _leaky_relu(g: _Graph, z: str) -> str:
    if g.named_ops:
        return g.op("LeakyRelu", [z], alpha=float(layers.LEAKY_SLOPE))
    positive = g.op("Greater", [z, g.scalar(0.0)])
    return g.op("Where", [positive, z, g.op("Mul", [g.scalar(float(layers.LEAKY_SLOPE)), z])])


def _elu(g: _Graph, z: str) -> str:
    """z above 0, exp(z) - 1 below (alpha 1); Exp only sees z <= 0, so it never overflows."""
    if g.named_ops:
        return g.op("Elu", [z], alpha=1.0)
    positive = g.op("Greater", [z, g.scalar(0.0)])
    below = g.op("Sub", [g.op("Exp", [g.op("Min", [z, g.scalar(0.0)])]), g.scalar(1.0)])
    return g.op("Where", [positive, z, below])


def _softplus(g: _Graph, z: str) -> str:
    """log(1 + exp(z)) as max(z, 0) + log(1 + exp(-|z|)), which never overflows."""
    if g.named_ops:
        return g.op("Softplus", [z])
    tail = g.op("Log", [g.op("Add", [g.scalar(1.0), g.op("Exp", [g.op("Neg", [g.op("Abs", [z])])])])])
    return g.op("Add", [g.op("Relu", [z]), tail])


def _silu(g: _Graph, z: str) -> str:
    """z sigmoid(z). Float64 takes the sigmoid in gpunn's tanh form, 0.5 tanh(z / 2) + 0.5: onnxruntime 1.19 fuses
    ``Mul(z, Sigmoid(z))`` into a float32-only kernel even in a float64 graph, and then cannot run it."""
    if g.named_ops:
        return g.op("Mul", [z, g.op("Sigmoid", [z])])
    half = g.scalar(0.5)
    s = g.op("Add", [g.op("Mul", [half, g.op("Tanh", [g.op("Mul", [half, z])])]), half])
    return g.op("Mul", [z, s])


_ACTIVATIONS = {
    "identity": lambda g, z: z,
    "relu": lambda g, z: g.op("Relu", [z]),
    "tanh": lambda g, z: g.op("Tanh", [z]),
    "sigmoid": lambda g, z: g.op("Sigmoid", [z]),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "gelu": _gelu,
    "silu": _silu,
    "softplus": _softplus,
}
