"""K-fold cross-validation over the shards and seed ensembles in the train stage (doodle/train/folds.py),
and predict averaging the members."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from doodle.core.metrics import map_at_3
from doodle.core.params import ParamError, from_mapping
from doodle.train.folds import OOF_TOP_K, read_oof
from tests.conftest import work_on_copy, write_oof, write_params

SHARD_COUNT = 3  # tests/conftest.py TINY; the validation shard is the last, 2


def _shard_keys(shard_dir: Path) -> dict[int, int]:
    """key_id -> index of the shard file holding it."""
    man = json.loads((shard_dir / "manifest.json").read_text())
    out = {}
    for i, name in enumerate(man["files"]):
        for key in pq.read_table(shard_dir / name, columns=["key_id"])["key_id"].to_pylist():
            out[key] = i
    return out


def _cache_rows(cache_dir: Path) -> dict[int, int]:
    """key_id -> label of every drawing in the render cache."""
    from doodle.batches.cache import open_files
    from doodle.render.format import read_cache_manifest

    split = open_files(cache_dir, [f["prefix"] for f in read_cache_manifest(cache_dir)["files"]])
    keys, labels = np.concatenate(split.keys), split.all_labels()
    assert len(set(keys.tolist())) == len(keys)
    return dict(zip(keys.tolist(), labels.tolist()))


def test_a_drawing_keeps_its_fold_when_data_is_added(rendered, tmp_path, monkeypatch):
    """Shard a source with half of each class file, then compare with the whole source's shards:
    every drawing of the smaller run is in the same fold in the larger one, for any K; the fold is
    fold_of_keys(key_id), a function of the key_id alone."""
    from doodle.train.folds import fold_of_keys

    small = tmp_path / "small"
    shutil.copytree(rendered / "data/sample", small)
    for csv in (small / "train_simplified").glob("*.csv"):
        lines = csv.read_text().splitlines(keepends=True)
        csv.write_text("".join(lines[: len(lines) // 2]))
    proj = tmp_path / "p"
    proj.mkdir()
    write_params(proj / "params.yaml", {"data": {"source": str(small)}})
    monkeypatch.chdir(proj)
    from stages import shard

    shard.main(["--quiet"])
    few, many = _shard_keys(proj / "data/shards"), _shard_keys(rendered / "data/shards")
    assert 0 < len(few) < len(many) and set(few) <= set(many)
    keys = np.array(sorted(few))
    for k in (2, 3):
        before = np.array([few[key] % k for key in keys])
        after = np.array([many[key] % k for key in keys])
        assert np.array_equal(before, after)
        assert np.array_equal(fold_of_keys(keys, SHARD_COUNT, k), before)


def test_folds_are_disjoint_and_cover_the_cache(rendered):
    from doodle.render.format import read_cache_manifest
    from doodle.shard.format import read_manifest
    from doodle.train.folds import fold_of_keys, open_fold, plan_folds, reference_fold

    cache_dir = rendered / "data/cache"
    cache, shards = read_cache_manifest(cache_dir), read_manifest(rendered / "data/shards")
    everything = _cache_rows(cache_dir)
    for k in (2, 3):
        folds = plan_folds(cache, shards, k, train_cache=True)
        assert [f.index for f in folds] == list(range(k))
        held = []
        for f in folds:
            train, val = open_fold(cache_dir, f)
            train_keys, val_keys = set(np.concatenate(train.keys).tolist()), np.concatenate(val.keys)
            assert train_keys.isdisjoint(val_keys.tolist())
            assert train_keys | set(val_keys.tolist()) == set(everything)
            assert (fold_of_keys(val_keys, SHARD_COUNT, k) == f.index).all()
            held.extend(val_keys.tolist())
        assert sorted(held) == sorted(everything)  # each drawing held out by exactly one fold
        assert reference_fold(folds, shards["val_shards"]) == 2 % k  # the fold holding out shard 2


def test_fold_and_seed_params_are_checked_in_one_line(rendered, tmp_path, monkeypatch):
    from doodle.predict.run import PredictParams
    from doodle.train.folds import plan_folds
    from doodle.train.params import TrainParams

    for bad, key in (({"folds": 0}, "train.folds"), ({"seeds": 0}, "train.seeds")):
        with pytest.raises(ParamError, match=key):
            from_mapping(TrainParams, bad, "train")
    with pytest.raises(ParamError, match="predict.models: must be auto"):
        from_mapping(PredictParams, {"models": "models/main/model.keras"}, "predict")
    # a fold of shards the cache does not hold (render.train_shards: 1 renders shard 0 and the val shard 2)
    cache = {"files": [{"prefix": "shard-000", "rows": 5}, {"prefix": "shard-002", "rows": 5}]}
    shards = {"count": 3, "files": [f"shard-00{i}.parquet" for i in range(3)]}
    with pytest.raises(ParamError, match="fold 0 of 2 has nothing to train on.*render.train_shards: null"):
        plan_folds(cache, shards, 2, train_cache=True)  # fold 0 holds out both cached shards, 0 and 2
    with pytest.raises(ParamError, match="fold 1 of 3 has nothing to validate on.*render.train_shards: null"):
        plan_folds(cache, shards, 3, train_cache=True)  # shard 1 is not in the cache

    proj = work_on_copy(rendered, tmp_path / "p", monkeypatch)
    from stages import train

    for overrides, message in (
        ({"train": {"folds": 4}}, "train.folds: 4 folds need at least 4 shards.*shard.count is 3"),
        (
            {"train": {"folds": 2}, "render": {"train_cache": False, "train_shards": 1}},
            "fold 0 of 2 has nothing to train on in the shards.*render.train_shards: null",
        ),
    ):
        write_params(proj / "params.yaml", overrides)
        with pytest.raises(ParamError, match=message) as err:
            train.main(["--quiet"])
        assert "\n" not in str(err.value)
    assert not Path("models").exists()  # stopped before training or clearing anything


def _member_probs(paths, images):
    from doodle.predict.inference import TrainedModel, predict_in_batches

    return np.mean([predict_in_batches(TrainedModel.load(p).model, images, 64) for p in paths], axis=0)


@pytest.mark.slow
def test_two_folds_by_two_seeds_and_predict_averages_the_members(rendered, tmp_path, monkeypatch):
    """The single model's run writes the holdout's predictions; a 2 x 2 run in the same project
    writes four members, mean and std metrics, an out-of-fold file with every cached drawing once,
    and predict (models: auto) averages the four."""
    from doodle.batches.cache import open_files
    from doodle.core.metrics import map_at_3
    from doodle.train.folds import fold_of_keys

    proj = work_on_copy(rendered, tmp_path / "p", monkeypatch)
    from stages import evaluate, predict, train

    train.main(["--quiet"])  # folds = seeds = 1: today's files, plus the holdout's probabilities
    assert sorted(p.name for p in Path("models/main/members").iterdir()) == ["oof.parquet"]
    holdout = pq.read_table("models/main/members/oof.parquet").to_pydict()
    val_keys = np.concatenate(open_files("data/cache", ["shard-002"]).keys).tolist()
    assert holdout["key_id"] == val_keys and set(holdout["fold"]) == {0}
    assert set(json.loads(Path("metrics/train/main.json").read_text())) == {"val_map_at_3", "epochs_run"}

    write_params(proj / "params.yaml", {"train": {"folds": 2, "seeds": 2}})
    train.main(["--quiet"])
    names = ["fold0-seed0", "fold0-seed1", "fold1-seed0", "fold1-seed1"]
    assert sorted(p.stem for p in Path("models/main/members").glob("*.keras")) == names
    metas = {n: json.loads(Path(f"models/main/members/{n}.json").read_text())["member"] for n in names}
    assert [(m["fold"], m["seed"]) for m in metas.values()] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert metas["fold0-seed0"]["val_shards"] == [0, 2] and metas["fold1-seed0"]["val_shards"] == [1]
    metrics = json.loads(Path("metrics/train/main.json").read_text())
    assert set(metrics) == {"val_map_at_3", "val_map_at_3_std", "oof_map_at_3", "epochs_run", "members"}
    report = json.loads(Path("reports/train/main.json").read_text())
    scores = [m["val_map_at_3"] for m in report["member_results"]]
    assert metrics["members"] == 4 and sorted(m["name"] for m in report["member_results"]) == names
    assert metrics["val_map_at_3"] == pytest.approx(np.mean(scores))
    assert metrics["val_map_at_3_std"] == pytest.approx(np.std(scores))
    # models/main/model.keras is the reference member: seed 0 of the fold holding out the val shard 2
    assert json.loads(Path("models/main/model.json").read_text())["member"]["name"] == "fold0-seed0"
    assert Path("dvclive/main/metrics.json").is_file() and not Path("models/backup").exists()
    assert sorted(p.name for p in Path("dvclive/main/members").iterdir()) == names[1:]
    assert Path("reports/train/main_curves.png").stat().st_size > 0  # the four members' curves side by side

    # the out-of-fold file: every cached drawing once, in the fold holding out its shard, with its label
    oof = pq.read_table("models/main/members/oof.parquet").to_pydict()
    labels = _cache_rows(Path("data/cache"))
    assert sorted(oof["key_id"]) == sorted(labels)
    assert np.array_equal(oof["fold"], fold_of_keys(np.array(oof["key_id"]), SHARD_COUNT, 2))
    assert oof["label"] == [labels[k] for k in oof["key_id"]]
    top_labels, top_probs = np.array(oof["top_labels"]), np.array(oof["top_probs"])
    assert top_labels.shape == (len(labels), 4)  # all 4 classes, best first
    np.testing.assert_allclose(top_probs.sum(axis=1), 1, atol=1e-4)
    assert metrics["oof_map_at_3"] == pytest.approx(map_at_3(np.array(oof["label"]), top_labels))
    # a fold's rows are the mean of its two seeds' probabilities
    fold0 = open_files("data/cache", ["shard-000"])
    images, first = fold0.images[0][:5], oof["key_id"].index(int(fold0.keys[0][0]))
    want = _member_probs(["models/main/members/fold0-seed0.keras", "models/main/members/fold0-seed1.keras"], images)
    for row in range(5):
        got = dict(zip(top_labels[first + row], top_probs[first + row]))
        np.testing.assert_allclose([got[c] for c in range(4)], want[row], rtol=1e-4, atol=1e-6)

    predict.main(["--quiet"])
    test = json.loads(Path("reports/test.json").read_text())
    assert test["models"] == 1 and test["model_files"] == 4  # one model of the blend: its 4 members averaged
    from doodle.predict.inference import TrainedModel, predict_test_file

    test_file = Path("data/sample/test_simplified.csv")
    members = sorted(Path("models/main/members").glob("*.keras"))
    each = [predict_test_file([TrainedModel.load(p)], test_file, 64, False).probs for p in members]
    mean = np.mean(each, axis=0)
    saved = pq.read_table("submissions/probabilities.parquet").to_pydict()
    for row in range(4):
        np.testing.assert_allclose(
            [saved[f"prob_{j}"][row] for j in (1, 2, 3)], np.sort(mean[row])[::-1][:3], rtol=1e-4, atol=1e-6
        )
    evaluate.main(["--quiet"])  # scores models/main/model.keras, the reference member
    assert set(json.loads(Path("metrics/eval.json").read_text())) == {"val_map_at_3", "val_top1", "val_top3"}


@pytest.mark.slow
def test_seeds_alone_average_on_the_holdout(rendered, tmp_path, monkeypatch):
    """train.seeds 2 with one fold: two members on the shard.val_shards holdout; the OOF file holds the
    validation shard's drawings, the mean of the two; an explicit predict.models list still works."""
    work_on_copy(
        rendered,
        tmp_path / "p",
        monkeypatch,
        {"train": {"seeds": 2}, "predict": {"models": ["models/main/model.keras"]}},
    )
    from doodle.batches.cache import open_split
    from doodle.predict.members import resolve_groups
    from stages import predict, train

    train.main(["--quiet"])
    members = sorted(Path("models/main/members").glob("*.keras"))
    assert [p.stem for p in members] == ["fold0-seed0", "fold0-seed1"]
    seeds = [json.loads(p.with_suffix(".json").read_text())["member"]["seed"] for p in members]
    assert seeds == [0, 1]
    val = open_split("data/cache", "val")
    oof = pq.read_table("models/main/members/oof.parquet").to_pydict()
    assert oof["key_id"] == np.concatenate(val.keys).tolist() and set(oof["fold"]) == {0}
    want = _member_probs(members, val.images[0][:3])
    for row in range(3):
        got = dict(zip(oof["top_labels"][row], oof["top_probs"][row]))
        np.testing.assert_allclose([got[c] for c in range(4)], want[row], rtol=1e-4, atol=1e-6)
    assert resolve_groups("auto", ["main"], Path("models")) == [("main", members)]
    predict.main(["--quiet"])
    assert json.loads(Path("reports/test.json").read_text())["models"] == 1  # the explicit list


@pytest.mark.slow
def test_a_stopped_ensemble_keeps_its_finished_members(rendered, tmp_path, monkeypatch, capsys):
    """A run stopped while its second member starts: the rerun takes the first member from its
    backup (no epoch trained again, the same model file) and trains the second."""
    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"train": {"seeds": 2}})
    from doodle.train import ensemble
    from stages import train

    real, started = ensemble.train_member, []

    def stopped_at_the_second(cfg, run, member, score):
        started.append(member.name)
        if len(started) == 2:
            raise KeyboardInterrupt
        return real(cfg, run, member, score)

    monkeypatch.setattr(ensemble, "train_member", stopped_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        train.main(["--quiet"])
    first = Path("models/main/members/fold0-seed0.keras").read_bytes()
    history = json.loads(Path("models/main/members/fold0-seed0.json").read_text())["history"]
    assert Path("models/backup/main/fold0-seed0").is_dir() and not Path("models/main/model.keras").exists()
    monkeypatch.setattr(ensemble, "train_member", real)
    capsys.readouterr()
    train.main(["--quiet"])
    out = capsys.readouterr().out
    assert re.search(r"^train \[fold0-seed0\]: [\d,]+ parameters; resuming from backup after epoch 2$", out, re.M)
    assert re.search(r"^train \[fold0-seed1\]: [\d,]+ parameters$", out, re.M)  # trained from the start
    assert Path("models/main/members/fold0-seed0.keras").read_bytes() == first
    assert json.loads(Path("models/main/members/fold0-seed0.json").read_text())["history"] == history
    assert Path("models/main/members/fold0-seed1.keras").is_file() and not Path("models/backup").exists()


@pytest.mark.slow
def test_folds_draw_on_the_fly_without_a_training_cache(rendered, tmp_path, monkeypatch):
    """render.train_cache: false with train.folds 2: the cache holds only the validation shard, and
    each fold trains and validates on drawings drawn from its shards' strokes. The held-out images
    are the cache's bytes, and the out-of-fold file holds every sharded drawing once, in its fold."""
    from doodle.batches.strokes import DrawnSplit
    from doodle.drawing.raster import RenderParams
    from doodle.shard.format import read_manifest
    from doodle.train.folds import fold_of_keys, fold_shard_paths, plan_folds

    work_on_copy(rendered, tmp_path / "p", monkeypatch, {"train": {"folds": 2}, "render": {"train_cache": False}})
    from stages import render, train

    render.main(["--quiet"])
    assert [f["prefix"] for f in json.loads(Path("data/cache/manifest.json").read_text())["files"]] == ["shard-002"]
    folds = plan_folds({}, read_manifest("data/shards"), 2, train_cache=False)
    assert [(f.train, f.val) for f in folds] == [
        (("shard-001",), ("shard-000", "shard-002")),
        (("shard-000", "shard-002"), ("shard-001",)),
    ]
    # a drawn split gives the cache's images, keys and labels, in the cache's order
    raster = RenderParams(**json.loads(Path("data/cache/manifest.json").read_text())["render"])
    drawn = DrawnSplit(fold_shard_paths("data/shards", ("shard-002",)), raster)
    cached = _cache_split(rendered / "data/cache", "shard-002")
    assert drawn.rows == cached.rows and np.array_equal(np.concatenate(drawn.keys), np.concatenate(cached.keys))
    assert np.array_equal(drawn.all_labels(), cached.all_labels())
    assert np.array_equal(np.concatenate(list(drawn.images)), np.asarray(cached.images[0]))

    train.main(["--quiet"])
    assert sorted(p.stem for p in Path("models/main/members").glob("*.keras")) == ["fold0-seed0", "fold1-seed0"]
    report = json.loads(Path("reports/train/main.json").read_text())
    every = _shard_keys(Path("data/shards"))
    assert sum(m["val_rows"] for m in report["member_results"]) == len(every)
    oof = pq.read_table("models/main/members/oof.parquet").to_pydict()
    assert sorted(oof["key_id"]) == sorted(every)  # every drawing once, though only shard 2 is cached
    assert np.array_equal(oof["fold"], fold_of_keys(np.array(oof["key_id"]), SHARD_COUNT, 2))
    labels = _cache_rows(rendered / "data/cache")  # the full cache of the fixture: every drawing's label
    assert oof["label"] == [labels[k] for k in oof["key_id"]]
    assert json.loads(Path("models/main/model.json").read_text())["member"]["name"] == "fold0-seed0"


def _cache_split(cache_dir: Path, prefix: str):
    from doodle.batches.cache import open_files

    return open_files(cache_dir, [prefix])


def test_an_out_of_fold_file_keeps_the_top_k_classes_and_reads_back_with_the_rest_zero(tmp_path):
    rng = np.random.default_rng(3)
    n, classes = 50, OOF_TOP_K + 10
    keys, labels = rng.permutation(10_000)[:n].astype(np.int64), rng.integers(0, classes, n)
    probs = rng.dirichlet(np.ones(classes), n)
    writer = write_oof(tmp_path / "oof.parquet", keys, labels, probs)
    assert writer.map_at_3 == pytest.approx(map_at_3(labels, probs))
    k, y, back = read_oof(tmp_path / "oof.parquet", classes)
    order = np.argsort(keys)
    assert back.shape == (n, classes) and np.array_equal(k, keys[order]) and np.array_equal(y, labels[order])
    kept = back > 0
    assert (kept.sum(axis=1) == OOF_TOP_K).all()  # each row's top k, the others 0
    np.testing.assert_allclose(back[kept], probs[order][kept], rtol=1e-6)
    assert np.array_equal(np.argsort(-back, axis=1)[:, :3], np.argsort(-probs[order], axis=1)[:, :3])
