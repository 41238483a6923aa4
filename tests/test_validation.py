"""Bad input gets a gpunn error that names the problem, and a rejected call changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn

X = np.arange(24, dtype=float).reshape(8, 3) / 10
Y = np.array([0, 1, 0, 1, 1, 0, 1, 0])


def _with(row, col, value, base=X):
    a = base.copy()
    a[row, col] = value
    return a


# (A single class is no longer bad input to a fitted model, which knows its classes: tests/test_model_targets.py.)
BAD_FIT = [
    ("nan in X", dict(X=_with(2, 1, np.nan)), gpunn.InputError, r"nan at row 2, column 1"),
    ("inf in X", dict(X=_with(5, 0, -np.inf)), gpunn.InputError, r"-inf at row 5, column 0"),
    ("too large for float32", dict(X=_with(3, 2, 1e39)), gpunn.InputError, r"row 3, column 2, too large for float32"),
    ("label 2 for sigmoid", dict(y=np.array([0, 1, 2, 1, 1, 0, 1, 0])), gpunn.InputError, r"label 2 at row 2"),
    ("negative label", dict(y=-Y), gpunn.InputError, r"label -1 at row 1"),
    ("fractional label", dict(y=Y * 0.5), gpunn.InputError, r"0.5 at row 1; class labels must be whole"),
    ("nan label", dict(y=np.where(Y == 1, np.nan, 0.0)), gpunn.InputError, r"nan at row 1"),
    ("row count mismatch", dict(y=Y[:7]), gpunn.InputError, r"X has 8 rows but y has 7"),
    ("empty X", dict(X=np.empty((0, 3)), y=np.empty(0)), gpunn.InputError, r"empty"),
    ("1-D X", dict(X=X[:, 0]), gpunn.InputError, r"2-D \(n_samples, n_features\); got shape \(8,\)$"),
    ("3-D X", dict(X=X.reshape(8, 3, 1)), gpunn.InputError, r"2-D.*\(8, 3, 1\)"),
    ("zero features", dict(X=np.empty((8, 0))), gpunn.InputError, r"0 features"),
    ("wrong feature count", dict(X=X[:, :2]), gpunn.InputError, r"2 features but the model expects 3"),
    ("strings", dict(X=X.astype(str)), gpunn.InputTypeError, r"X has dtype <U"),
    ("objects", dict(X=X.astype(object)), gpunn.InputTypeError, r"dtype object"),
    ("complex", dict(X=X.astype(complex)), gpunn.InputTypeError, r"complex128"),
    ("None X", dict(X=None), gpunn.InputTypeError, r"X is None"),
    ("None y", dict(y=None), gpunn.InputTypeError, r"y is None"),
    ("ragged", dict(X=[[1.0, 2.0, 3.0]] * 7 + [[1.0]]), gpunn.InputError, r"ragged"),
    ("y 2-D wide", dict(y=np.stack([Y, Y], 1)), gpunn.InputError, r"shape \(8, 2\)"),
    ("lr zero", dict(lr=0), gpunn.ConfigError, r"lr must be a finite number > 0"),
    ("lr negative", dict(lr=-0.1), gpunn.ConfigError, r"lr"),
    ("lr nan", dict(lr=float("nan")), gpunn.ConfigError, r"lr"),
    ("lr string", dict(lr="0.1"), gpunn.ConfigError, r"lr must be a number > 0; got '0.1'"),
    ("lr bool", dict(lr=True), gpunn.ConfigError, r"lr must be a number > 0; got True"),
    ("epochs negative", dict(epochs=-1), gpunn.ConfigError, r"epochs must be an integer >= 0"),
    ("epochs float", dict(epochs=2.5), gpunn.ConfigError, r"epochs"),
    ("batch size zero", dict(batch_size=0), gpunn.ConfigError, r"batch_size must be an integer >= 1"),
    ("unknown optimizer", dict(optimizer="rmsprop"), gpunn.ConfigError, r"optimizer 'rmsprop'.*nesterov, adam, adamw"),
    ("bad validation pair", dict(validation_data=(X,)), gpunn.InputError, r"validation_data must be a pair"),
    ("bad validation X", dict(validation_data=(_with(0, 0, np.nan), Y)), gpunn.InputError, r"validation X"),
    ("l2 negative", dict(l2=-1.0), gpunn.ConfigError, r"^l2 must be a finite number >= 0; got -1.0$"),
    ("l2 nan", dict(l2=float("nan")), gpunn.ConfigError, r"^l2 must be a finite number >= 0; got nan$"),
    ("shuffle a string", dict(shuffle="no"), gpunn.ConfigError, r"^shuffle must be True or False; got 'no'$"),
    # a string was truthy: convert="no" converted, copy="no" copied
    ("convert a string", dict(convert="no"), gpunn.ConfigError, r"^convert must be True or False; got 'no'$"),
    ("copy a string", dict(copy="no"), gpunn.ConfigError, r"^copy must be True or False; got 'no'$"),
    # the mask was dropped: the values under it trained as data
    (
        "masked X",
        dict(X=np.ma.masked_array(X, mask=X > 1.5)),
        gpunn.InputError,
        r"^X is a masked array with \d+ masked values, .*fill them",
    ),
    # was an AttributeError ('int' object has no attribute 'check_agreement') from inside fit
    (
        "comm not a communicator",
        dict(comm=3),
        gpunn.ConfigError,
        r"^comm must be a gpunn.distributed.Communicator \(or "
        r"None\); got int$",
    ),
]


@pytest.mark.parametrize("case", BAD_FIT, ids=[c[0] for c in BAD_FIT])
def test_bad_fit_input_is_rejected_and_changes_nothing(case):
    _, override, error, pattern = case
    args = {"X": X, "y": Y, "epochs": 2, "verbose": 0, **override}
    m = gpunn.MLP([3, 4, 1], device="cpu", standardize=True, seed=1)
    m.fit(X, Y, epochs=1, optimizer="momentum", batch_size=4, verbose=0)
    before = [np.array(a) for pair in m.weights for a in pair]
    state = [np.array(v) for v in m.optimizer_state["velocity"]]
    rng_state, scaling, epoch = m.rng.bit_generator.state, m.scaling, m.epoch
    with pytest.raises(error, match=pattern):
        m.fit(args.pop("X"), args.pop("y"), **args)
    assert issubclass(error, (ValueError, TypeError))
    for a, b in zip(before, [a for pair in m.weights for a in pair]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(state, m.optimizer_state["velocity"]):
        np.testing.assert_array_equal(a, b)
    assert m.rng.bit_generator.state == rng_state and m.scaling is scaling and m.epoch == epoch


def test_softmax_labels_must_be_class_indices():
    m = gpunn.MLP([3, 4, 3], output="softmax", device="cpu")
    with pytest.raises(gpunn.InputError, match=r"label 3 at row 0, outside 0..2"):
        m.fit(X, np.array([3, 0, 1, 2, 0, 1, 2, 0]), epochs=1, verbose=0)


def test_a_fresh_model_predicts_with_its_initial_weights():
    m = gpunn.MLP([3, 4, 1], device="cpu", dtype="float64")
    (w1, b1), (w2, b2) = m.numpy_weights()
    expected = 1 / (1 + np.exp(-(np.maximum(X @ w1.T + b1, 0) @ w2.T + b2)))  # the forward pass, written here
    np.testing.assert_allclose(m.predict_proba(X), expected, rtol=1e-12)


def test_predict_before_fit_of_a_standardizing_model_is_a_clear_error():
    with pytest.raises(gpunn.NotFittedError, match="not been trained yet, so it has no scaling"):
        gpunn.MLP([3, 4, 1], device="cpu", standardize=True).predict(X)


def test_a_1d_row_or_column_gets_the_reshape_that_fits_it():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    m.fit(X, Y, epochs=1, verbose=0)
    with pytest.raises(gpunn.InputError, match=r"got shape \(3,\) \(a single sample\? use X.reshape\(1, -1\)\)"):
        m.predict(X[0])
    one = gpunn.MLP([1, 4, 1], device="cpu")
    with pytest.raises(gpunn.InputError, match=r"got shape \(8,\) \(a single feature\? use X.reshape\(-1, 1\)\)"):
        one.fit(X[:, 0], Y, epochs=1, verbose=0)


def test_numpy_dtypes_name_the_model_dtype():
    for given in (np.float64, np.dtype("float64"), "float64"):
        assert gpunn.MLP([3, 4, 1], device="cpu", dtype=given).dtype == "float64"
    assert gpunn.MLP([3, 4, 1], device="cpu", dtype=np.float32).dtype == "float32"


def test_predict_with_wrong_feature_count():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    m.fit(X, Y, epochs=1, verbose=0)
    with pytest.raises(gpunn.InputError, match="4 features but the model expects 3"):
        m.predict(np.ones((2, 4)))


BAD_MODEL = [
    (dict(sizes=[3]), r"at least two layer widths"),
    (dict(sizes=[3, 0, 1]), r"width.*>= 1"),
    (dict(sizes="31"), r"sizes"),
    (dict(activation="swish"), r"activation 'swish'.*relu, tanh, sigmoid"),
    (dict(activation=["relu", "tanh"]), r"a list with one name per hidden layer \(1\); got \['relu', 'tanh'\]"),
    (dict(sizes=[3, 4, 4, 1], activation=["relu", "swish"]), r"activation of hidden layer 2 'swish' is not known"),
    (dict(output="linear"), r"output 'linear'.*sigmoid, softmax, identity"),
    (dict(dtype="float16"), r"dtype 'float16'.*float32, float64"),
    (dict(loss="hinge"), r"loss 'hinge'"),
    (dict(output="identity", loss="binary_crossentropy"), r"cannot be trained with"),
    (dict(output="softmax", sizes=[3, 1]), r"softmax.*at least 2"),
    (dict(seed=-1), r"seed"),
    (dict(dtype=None), r"dtype None is not known; use one of float32, float64"),  # not NumPy's float64 for None
    (dict(standardize="no"), r"^standardize must be True or False; got 'no'$"),
]


@pytest.mark.parametrize("override,pattern", BAD_MODEL)
def test_bad_hyper_parameters_are_rejected(override, pattern):
    kwargs = {"sizes": [3, 4, 1], "device": "cpu", **override}
    with pytest.raises(gpunn.ConfigError, match=pattern):
        gpunn.MLP(kwargs.pop("sizes"), **kwargs)


def test_set_weights_rejects_wrong_shapes_and_keeps_the_old_ones():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    before = np.array(m.weights[0][0])
    with pytest.raises(gpunn.InputError, match=r"W1 has shape \(2, 4\); the model needs \(1, 4\)"):
        m.set_weights([(np.ones((4, 3)), np.ones(4)), (np.ones((2, 4)), np.ones(1))])
    np.testing.assert_array_equal(before, m.weights[0][0])


def test_an_array_of_another_namespace_names_convert_true():
    torch = pytest.importorskip("torch")
    m = gpunn.MLP([3, 4, 1], device="cpu")
    m.fit(X, Y, epochs=1, verbose=0)
    with pytest.raises(
        gpunn.InputTypeError, match=r"X is a torch array but the model runs on numpy; pass convert=True"
    ):
        m.predict(torch.from_numpy(X))
    np.testing.assert_array_equal(m.predict(torch.from_numpy(X), convert=True), m.predict(X))


def test_l2_of_zero_and_a_numpy_bool_shuffle_are_accepted():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    assert m.fit(X, Y, epochs=1, verbose=0, l2=0, shuffle=np.bool_(False)).epochs == 1


BAD_OPTIMIZER = [
    (lambda: gpunn.optim.momentum(beta=1.5), r"^beta must be in \[0, 1\]; got 1.5$"),
    (lambda: gpunn.optim.momentum(beta=float("nan")), r"^beta must be in \[0, 1\]; got nan$"),
    (lambda: gpunn.optim.momentum(beta="0.9"), r"^beta must be a number in \[0, 1\]; got '0.9'$"),
    (lambda: gpunn.optim.momentum(nesterov="yes"), r"^nesterov must be True or False; got 'yes'$"),
    (lambda: gpunn.optim.adam(beta1=1.0), r"^beta1 must be in \[0, 1\); got 1.0$"),  # bias correction's 1 - 1**t
    (lambda: gpunn.optim.adam(beta2=-0.5), r"^beta2 must be in \[0, 1\); got -0.5$"),
    (lambda: gpunn.optim.adam(beta1=None), r"^beta1 must be a number in \[0, 1\); got None$"),
    (lambda: gpunn.optim.adam(eps=-1e-8), r"^eps must be a finite number > 0; got -1e-08$"),
    # eps=0 and history=2000 trained, and saved a checkpoint that gpunn.load refused
    (lambda: gpunn.optim.adam(eps=0), r"^eps must be a finite number > 0; got 0$"),
    (lambda: gpunn.optim.lbfgs(history=2000), r"^history must be an integer from 1 to 1000; got 2000$"),
    (lambda: gpunn.optim.adamw(weight_decay=-0.1), r"^weight_decay must be a finite number >= 0; got -0.1$"),
    (lambda: gpunn.optim.adamw(eps=float("inf")), r"^eps must be a finite number > 0; got inf$"),
]


@pytest.mark.parametrize("make,pattern", BAD_OPTIMIZER, ids=[p for _, p in BAD_OPTIMIZER])
def test_optimizer_hyper_parameters_are_checked_where_the_optimizer_is_made(make, pattern):
    # beta1=1 was a ZeroDivisionError in the first step, "0.9" a ValueError from float(), and beta=nan or eps < 0
    # trained on into a NonFiniteError that blamed the learning rate
    with pytest.raises(gpunn.ConfigError, match=pattern):
        make()


def test_optimizer_edges_of_the_ranges_are_accepted_and_saved_as_loadable(tmp_path):
    assert gpunn.optim.momentum(beta=1).hyper == {"beta": 1.0, "nesterov": False}  # scikit-learn's momentum=1
    assert gpunn.optim.adam(beta1=0, beta2=0.0, eps=1e-300).hyper == {"beta1": 0.0, "beta2": 0.0, "eps": 1e-300}
    for opt in (gpunn.optim.adamw(weight_decay=0, eps=1e-300), gpunn.optim.lbfgs(history=1000)):
        m = gpunn.MLP([3, 4, 1], device="cpu")
        m.fit(X, Y, epochs=1, verbose=0, optimizer=opt)
        m.save(tmp_path / "m.safetensors")
        assert gpunn.load(tmp_path / "m.safetensors", device="cpu").optimizer == opt


def test_set_weights_that_are_not_pairs_are_clear_errors_and_keep_the_old_ones():
    m = gpunn.MLP([3, 4, 1], device="cpu")
    before = np.array(m.params)
    with pytest.raises(gpunn.InputTypeError, match=r"^set_weights takes a list of \(W, b\) pairs, one per layer; "
                       r"got NoneType$"):  # fmt: skip
        m.set_weights(None)
    with pytest.raises(gpunn.InputError, match=r"^set_weights: layer 0 must be a \(W, b\) pair$"):
        m.set_weights([None, None])
    np.testing.assert_array_equal(before, m.params)


def test_saving_a_model_whose_widths_are_not_inferred_yet_is_not_fitted(tmp_path):
    with pytest.raises(gpunn.NotFittedError, match=r"MLP\(hidden=\[4\]\) has no weights yet"):
        gpunn.MLP(hidden=[4], device="cpu").save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_layers_too_large_for_memory_are_refused_before_the_draw():
    # was NumPy's MemoryError ("Unable to allocate 146. TiB") from inside the initial draw, for MLP and Ensemble
    pattern = r"^a network of sizes \[3, 10000000000000, 1\] needs [0-9.]+ GiB for its weights alone.*: use smaller"
    for make in (lambda: gpunn.MLP([3, 10**13, 1], device="cpu"), lambda: gpunn.Ensemble([3, 10**13, 1], 2)):
        with pytest.raises(gpunn.OutOfMemoryError, match=pattern):
            make()
    m = gpunn.MLP(hidden=[10**13], device="cpu")
    with pytest.raises(gpunn.OutOfMemoryError, match=pattern):
        m.fit(X, Y, epochs=1, verbose=0)
    assert m.sizes is None and m.classes is None and not m.fitted and m.epoch == 0


def test_an_ensemble_refuses_a_comm_that_is_not_a_communicator_before_anything_changes():
    ens = gpunn.Ensemble([3, 4, 1], members=2, device="cpu")
    before = np.array(ens.params)
    with pytest.raises(
        gpunn.ConfigError, match=r"^comm must be a gpunn.distributed.Communicator \(or None\); got str$"
    ):
        ens.fit(X, Y, epochs=1, verbose=0, comm="mpi")
    np.testing.assert_array_equal(before, np.array(ens.params))
    assert [m.epoch for m in ens.members] == [0, 0]


def test_convert_that_is_not_a_bool_is_refused_by_predictions_and_evaluate():
    # a string was truthy: convert="no" converted
    m = gpunn.MLP([3, 4, 1], device="cpu", seed=1)
    ens = gpunn.Ensemble([3, 4, 1], 2, device="cpu", seed=1)
    ens.fit(X, Y, epochs=1, verbose=0)
    for call in (m.predict, m.predict_proba, m.decision_function, ens.predict, ens.predict_proba):
        with pytest.raises(gpunn.ConfigError, match=r"^convert must be True or False; got 'no'$"):
            call(X, convert="no")
    for model in (m, ens):
        with pytest.raises(gpunn.ConfigError, match=r"^convert must be True or False; got 1$"):
            model.evaluate(X, Y, convert=1)
