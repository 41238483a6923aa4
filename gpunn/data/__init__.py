"""Data on the host: built-in datasets, data files (CSV, Parquet, Feather, NumPy), train/test splits, and
:class:`Dataset` for files larger than memory.

Everything here returns NumPy arrays and knows no model: checking, scaling and placing data on a device is the
feed layer's (:mod:`gpunn.feed`)."""

from .columns import Columns
from .dataset import Dataset
from .readers import FORMATS, ReadResult, read, read_csv, read_table, write_csv
from .toy import DATASETS, make_circles, make_dataset, make_moons, make_spirals, permute_rows, train_test_split

__all__ = [
    "DATASETS", "FORMATS", "Columns", "Dataset", "ReadResult", "make_circles", "make_dataset", "make_moons",
    "make_spirals", "permute_rows", "read", "read_csv", "read_table", "train_test_split", "write_csv",
]  # fmt: skip
