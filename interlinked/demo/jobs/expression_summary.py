"""A small real computation: per-gene summary statistics of a simulated expression matrix."""

import numpy as np


def summarise(args):
    rng = np.random.default_rng(args.get("seed", 0))
    cells, genes = args["cells"], args["genes"]
    counts = rng.negative_binomial(2, 0.3, size=(cells, genes))
    means = counts.mean(axis=0)
    print(f"simulated {cells} cells x {genes} genes")
    top = np.argsort(means)[::-1][:3]
    return {
        "cells": cells,
        "genes": genes,
        "sparsity": float((counts == 0).mean()),
        "top_genes": [f"gene_{i}" for i in top],
        "top_means": [round(float(means[i]), 3) for i in top],
    }
