"""Peak memory of gpunn training on the mid cell: ``python -m benchmarks.memory`` prints one JSON object.

Compares the peak RSS over the interpreter's baseline with what training must hold: the dataset, the
parameters, Adam's two slots, and one batch's activations and gradients; and records RSS after every epoch to
show that it does not grow.
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.worker import peak_rss_mib, rss_mib

SIZES = [784, 256, 256, 10]
SAMPLES, BATCH, EPOCHS = 60_000, 1024, 5


def main() -> None:
    import gpunn

    baseline = rss_mib()
    rng = np.random.default_rng(0)
    X = rng.standard_normal(size=(SAMPLES, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], size=SAMPLES)
    m = gpunn.MLP(SIZES, output="softmax", device="cpu")
    per_epoch = []
    m.fit(X, y, epochs=EPOCHS, lr=1e-3, batch_size=BATCH, optimizer="adam", verbose=0,
          callbacks=[lambda model, record: per_epoch.append(rss_mib())])  # fmt: skip
    params = sum(w * i + w for i, w in zip(SIZES[:-1], SIZES[1:]))
    activations = BATCH * (SIZES[0] + 2 * sum(SIZES[1:]))  # the gathered batch, then z/a and delta per layer
    needed = X.nbytes + y.nbytes + 4 * (3 * params + params + activations)  # params, 2 Adam slots, grads
    peak = peak_rss_mib() - baseline
    print(json.dumps({
        "samples": SAMPLES, "batch": BATCH, "needed_mib": needed / 2**20, "peak_over_baseline_mib": peak,
        "ratio": peak / (needed / 2**20), "rss_per_epoch_mib": [v - baseline for v in per_epoch],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
