"""The tutorial's network as most NumPy tutorials write it: one function, in-place updates, float32.

This is the baseline gpunn must not be slower than. It follows the tutorial's steps literally: ReLU hidden
layers, a sigmoid (or softmax) output, cross-entropy, dZ = dA * (Z > 0), dW = dZ^T . A_prev / m,
db = sum(dZ) / m, and W -= lr * dW, with the loss and accuracy of every batch accumulated for the epoch report.
"""

from __future__ import annotations

import numpy as np


def init(sizes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params.append([rng.normal(0.0, np.sqrt(2.0 / n_in), (n_out, n_in)).astype(dtype), np.zeros(n_out, dtype)])
    return params


def train_epoch(params, X, Y, lr, batch_size, rng, softmax):
    """One epoch of minibatch SGD; Y is (n, 1) 0/1 floats (sigmoid) or one-hot rows (softmax)."""
    n = X.shape[0]
    order = rng.permutation(n) if batch_size < n else None
    total_loss = 0.0
    correct = 0
    for start in range(0, n, batch_size):
        if order is None:
            xb, yb = X, Y
        else:
            idx = order[start : start + batch_size]
            xb, yb = X[idx], Y[idx]
        m = xb.shape[0]
        # forward
        activations = [xb]
        zs = []
        a = xb
        for W, b in params[:-1]:
            z = a @ W.T + b
            zs.append(z)
            a = np.maximum(0, z)
            activations.append(a)
        W, b = params[-1]
        z = a @ W.T + b
        if softmax:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            total_loss += -np.sum(yb * np.log(p + 1e-12))
            correct += np.sum(p.argmax(axis=1) == yb.argmax(axis=1))
        else:
            p = 1 / (1 + np.exp(-z))
            total_loss += -np.sum(yb * np.log(p + 1e-12) + (1 - yb) * np.log(1 - p + 1e-12))
            correct += np.sum((p > 0.5) == (yb > 0.5))
        # backward
        dz = p - yb
        grads = []
        for i in range(len(params) - 1, -1, -1):
            W, b = params[i]
            dW = dz.T @ activations[i] / m
            db = np.sum(dz, axis=0) / m
            grads.append((dW, db))
            if i > 0:
                da = dz @ W
                dz = da * (zs[i - 1] > 0)
        # update
        for (W, b), (dW, db) in zip(params, reversed(grads)):
            W -= lr * dW
            b -= lr * db
    return float(total_loss) / n, float(correct) / n
