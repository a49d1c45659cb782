"""Would stacking beat the weighted blend? Both measured on a finished project's validation drawings.

    python -m benchmarks.stacking [--project DIR] [--folds 5] [--test-labels CSV]

Reads each model's validation probabilities from its out-of-fold file (models/<name>/members/
oof.parquet, which every train@<name> writes: the holdout's, or a K-fold ensemble's out-of-fold
rows), aligned by key_id, and compares by K-fold cross-validation over those drawings (each fold's
method fitted on the others, scored on it; one MAP@3 over every drawing):

- each model alone;
- the blend predict makes (``predict.weights: fit``: a grid on the simplex, doodle.predict.blend);
- a stacker: a multinomial logistic regression on the models' log-probabilities (scikit-learn,
  the field's usual second level), at a few regularisation strengths, the best chosen inside each
  training part by a nested split (so its figure is not picked on the drawings it is scored on).

With ``--test-labels`` (a Kaggle-layout ``test_labels.csv``) it also predicts the project's test
file with each model, fits each method on all the validation drawings and reports its test MAP@3:
reported, never used for a choice. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from doodle.core.metrics import map_at_3
from doodle.predict.blend import fit_weights
from doodle.train.folds import read_oof

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation of the stacker, chosen by a nested split


def features(probs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.log(np.clip(p, 1e-6, 1.0)) for p in probs], axis=1)


def fit_stacker(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000).fit(x, y)


def stacker_probs(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, classes: int, seed: int) -> tuple[np.ndarray, float]:
    """The stacker's probabilities of ``x_new``, its C chosen by a nested 2-way split of (x, y)."""
    rng = np.random.default_rng(seed)
    inner = rng.permutation(len(y)) % 2 == 0
    best = max(
        C_GRID,
        key=lambda c: map_at_3(y[~inner], fit_stacker(x[inner], y[inner], c).predict_proba(x[~inner])),
    )
    model = fit_stacker(x, y, best)
    probs = np.zeros((len(x_new), classes))
    probs[:, model.classes_] = model.predict_proba(x_new)  # a class absent from (x, y) keeps 0
    return probs, best


def cross_validate(probs: list[np.ndarray], labels: np.ndarray, folds: int, seed: int = 0) -> dict:
    """Each method's MAP@3 over all drawings, every drawing scored by a method fitted without it."""
    fold = np.random.default_rng(seed).permutation(len(labels)) % folds
    blend = np.zeros_like(probs[0])
    stacked = np.zeros_like(probs[0])
    chosen = []
    x = features(probs)
    for f in range(folds):
        held = fold == f
        weights, _ = fit_weights([p[~held] for p in probs], labels[~held])
        blend[held] = sum(w * p[held] for w, p in zip(weights, probs))
        stacked[held], c = stacker_probs(x[~held], labels[~held], x[held], probs[0].shape[1], seed + f)
        chosen.append(c)
    return {
        "blend": round(map_at_3(labels, blend), 4),
        "stacker": round(map_at_3(labels, stacked), 4),
        "stacker_c": chosen,
    }


def scores_on_test(
    project: Path, names: list[str], probs: list[np.ndarray], labels: np.ndarray, test_labels: Path
) -> dict:
    """Each method fitted on all validation drawings, scored on the test file (reported only)."""
    import yaml

    from doodle.predict.inference import TrainedModel, predict_test_file
    from doodle.sources.folder import resolve_source

    data = yaml.safe_load((project / "params.yaml").read_text())["data"]
    source = resolve_source(project / data["source"], data.get("kind", "auto"))  # an absolute source stays itself
    models = [TrainedModel.load(project / "models" / name / "model.keras") for name in names]
    tests = [predict_test_file([model], source.test_file, 512, False) for model in models]
    classes = models[0].classes
    answers = pd.read_csv(test_labels, dtype=str, keep_default_na=False)
    truth = dict(zip(answers["key_id"].str.strip(), answers["word"].str.replace("_", " ")))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[truth[k]] for k in tests[0].key_ids])
    test = [t.probs.astype(np.float64) for t in tests]
    weights, _ = fit_weights(probs, labels)
    stacked, c = stacker_probs(features(probs), labels, features(test), probs[0].shape[1], 0)
    out = {f"{n}_alone": round(map_at_3(y, p), 4) for n, p in zip(names, test)}
    out["blend"] = round(map_at_3(y, sum(w * p for w, p in zip(weights, test))), 4)
    out["blend_weights"] = [round(float(w), 2) for w in weights]
    out["stacker"] = round(map_at_3(y, stacked), 4)
    out["stacker_c"] = c
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", default=".", help="a project whose train@<name> stages have run")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--test-labels", help="a Kaggle-layout test_labels.csv: also report each method's test MAP@3")
    args = p.parse_args(argv)
    project = Path(args.project)
    t0 = time.perf_counter()
    files = sorted((project / "models").glob("*/members/oof.parquet"))
    files = [f for f in files if f.parts[-4] != "backup"]
    if len(files) < 2:
        raise SystemExit(f"error: {project / 'models'} holds {len(files)} model(s) with an out-of-fold file; need 2+")
    names = [f.parts[-3] for f in files]
    read = [read_oof(f, len(json.loads((f.parents[1] / "model.json").read_text())["classes"])) for f in files]
    keys, labels = read[0][0], read[0][1]
    for name, (k, y, _) in zip(names, read):
        if not (np.array_equal(k, keys) and np.array_equal(y, labels)):
            raise SystemExit(f"error: {name}'s out-of-fold file holds other drawings than {names[0]}'s")
    probs = [r[2] for r in read]
    result = {"drawings": len(labels), "models": names}
    result["val_alone"] = {n: round(map_at_3(labels, p), 4) for n, p in zip(names, probs)}
    result["val_cv"] = cross_validate(probs, labels, args.folds)
    print(f"validation ({len(labels):,} drawings, {args.folds}-fold CV of each method): {result['val_cv']}")
    if args.test_labels:
        result["test"] = scores_on_test(project, names, probs, labels, Path(args.test_labels))
        print(f"test (fitted on all validation drawings; reported only): {result['test']}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
