"""scikit-learn drop-in estimators: change one import line and train the same MLP on a GPU.

``gpunn.sklearn.MLPClassifier`` and ``MLPRegressor`` take scikit-learn's constructor parameters (plus
``device``), expose the same fitted attributes, and pass ``sklearn.utils.estimator_checks.check_estimator``.
NumPy input trains on ``device`` ("auto": a GPU when usable); CuPy, PyTorch and JAX input trains on that
array's own device, and outputs come back in the input's namespace.
"""

from ._classifier import MLPClassifier
from ._regressor import MLPRegressor
from .search import MLPSearchCV

__all__ = ["MLPClassifier", "MLPRegressor", "MLPSearchCV"]
