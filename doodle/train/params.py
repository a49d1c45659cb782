"""The train stage's params (params.yaml section ``train``).

Where training runs (devices, distribution strategies, the workers of a multi-worker run) is in
:mod:`doodle.train.strategy`; the optimizer, loss, metrics and the callbacks around ``model.fit`` in
:mod:`doodle.train.compile`; exact resumption in :mod:`doodle.train.resume`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from doodle.core.params import ParamError, from_mapping, require
from doodle.drawing.augment import StrokeAugmentParams
from doodle.drawing.raster import RenderParams
from doodle.drawing.sequence import SequenceParams
from doodle.models import ARCHITECTURES, AugmentParams, architecture, reads_images
from doodle.render.params import RenderSection

#: The drawing params a model may set for itself (``train.render``); the rest of the render section
#: (what the cache holds, how many drawings) is the run's.
RASTER_KEYS = ("size", "line_width", "channels", "antialias")

#: ``train.strategy``: how training is spread over devices and machines (doodle.train.strategy.device_strategy).
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


@dataclass(frozen=True)
class TrainParams:
    """params.yaml section ``train``; the defaults are params.yaml's values."""

    model: str = "cnn"
    width: float = 0.25
    batch_size: int = 128
    epochs: int = 8
    steps_per_epoch: int | None = None  # null = one full pass over the training cache
    val_rows: int | None = 20_000  # drawings scored each epoch (the first N); the whole split once at the end
    optimizer: str = "adam"
    learning_rate: float = 0.003
    label_smoothing: float = 0.0
    schedule: str = "plateau"  # plateau | cosine | onecycle | constant
    early_stopping_patience: int = 4
    time_budget_s: int | None = None  # wall-clock seconds of model.fit; stops at an epoch end (null = none)
    mixed_precision: bool = True  # float16/bfloat16 compute, on GPUs only
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker | tpu (doodle.train.strategy)
    seed: int = 0
    shuffle_block_rows: int = 512
    shuffle_buffer_blocks: int = 64
    stroke_buffer_groups: int = 4  # on-the-fly input: shuffle buffer in parquet row groups
    render_threads: int | None = None  # on-the-fly input: threads drawing each batch (None = one per core)
    input_processes: int = 0  # on-the-fly input: processes making the batches (0 = the training process)
    stroke_augment: dict = field(default_factory=lambda: asdict(StrokeAugmentParams()))
    bn_recalibration_batches: int = 20  # recompute BatchNorm statistics each epoch (doodle.train.batchnorm); 0 = off
    augment: dict = field(default_factory=lambda: asdict(AugmentParams()))
    sequence: dict = field(default_factory=lambda: asdict(SequenceParams()))  # stroke models' input
    render: dict = field(default_factory=dict)  # an image model's own drawing params over the render section's
    folds: int = 1  # K-fold cross-validation over the shards (doodle.train.folds); 1 = the shard.val_shards holdout
    seeds: int = 1  # models per fold, seeded train.seed, train.seed + 1, ...; folds x seeds = the ensemble

    def validate(self, where: str = "train") -> None:
        """Each value on its own and against the others of the section; what they must agree with
        outside it (the render params, the cache and the shards) is checked by
        :func:`doodle.train.ensemble.check_run`."""
        require(
            self.model in ARCHITECTURES,
            f"{where}.model",
            f"unknown model {self.model!r}; choose one of {sorted(ARCHITECTURES)}",
        )
        require(
            self.optimizer in ("adam", "adamw", "sgd", "rmsprop"),
            f"{where}.optimizer",
            f"unknown optimizer {self.optimizer!r}",
        )
        require(
            self.schedule in ("plateau", "cosine", "onecycle", "constant"),
            f"{where}.schedule",
            f"unknown schedule {self.schedule!r}",
        )
        require(
            self.strategy in STRATEGIES,
            f"{where}.strategy",
            f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}",
        )
        require(self.batch_size >= 1 and self.epochs >= 1, where, "batch_size and epochs must be >= 1")
        require(self.val_rows is None or self.val_rows >= 1, f"{where}.val_rows", "must be >= 1 or null (all)")
        require(self.learning_rate > 0, f"{where}.learning_rate", "must be > 0")
        require(0 <= self.label_smoothing < 1, f"{where}.label_smoothing", "must be in [0, 1)")
        require(self.width > 0, f"{where}.width", "must be > 0")
        require(self.time_budget_s is None or self.time_budget_s > 0, f"{where}.time_budget_s", "must be > 0 or null")
        require(self.folds >= 1, f"{where}.folds", "must be >= 1 (1 = the shard.val_shards holdout)")
        require(self.seeds >= 1, f"{where}.seeds", "must be >= 1 (models trained per fold)")
        require(self.bn_recalibration_batches >= 0, f"{where}.bn_recalibration_batches", "must be >= 0")
        from_mapping(AugmentParams, self.augment, f"{where}.augment")
        require(self.stroke_buffer_groups >= 1, f"{where}.stroke_buffer_groups", "must be >= 1")
        require(self.render_threads is None or self.render_threads >= 1, f"{where}.render_threads", "must be >= 1")
        require(self.input_processes >= 0, f"{where}.input_processes", "must be >= 0 (0: the training process)")
        from_mapping(StrokeAugmentParams, self.stroke_augment, f"{where}.stroke_augment")
        from_mapping(SequenceParams, self.sequence, f"{where}.sequence")
        require(
            set(self.render) <= set(RASTER_KEYS),
            f"{where}.render",
            f"a model's own drawing params are {', '.join(RASTER_KEYS)}; got {', '.join(sorted(self.render))}",
        )
        require(
            self.reads_images or not self.render,
            f"{where}.render",
            f"the stroke model {self.model!r} draws nothing: its input is train.sequence",
        )
        from_mapping(RenderParams, {**RenderParams().to_dict(), **self.render}, f"{where}.render")
        require(
            self.reads_images or not self.augment_params.any(),
            f"{where}.augment",
            f"image augmentation does not apply to the stroke model {self.model!r}: use train.stroke_augment",
        )

    @property
    def reads_images(self) -> bool:
        """Whether ``train.model`` reads drawn images (else point sequences, ``train.sequence``)."""
        return reads_images(self.model)

    def raster(self, render_cfg: RenderSection) -> RenderParams:
        """How an image model draws: the render section's params with ``train.render`` over them."""
        return RenderParams(**{**render_cfg.raster().to_dict(), **self.render})

    def encoder(self, render_cfg: RenderSection):
        """What makes the model's input from strokes, for training and (through the model's metadata)
        prediction alike: :meth:`raster` for an image model, ``train.sequence`` for a stroke model."""
        return self.raster(render_cfg) if self.reads_images else self.sequence_params

    @property
    def sequence_params(self) -> SequenceParams:
        """``train.sequence`` as the stroke models' encoder (checked by :meth:`validate`)."""
        return from_mapping(SequenceParams, self.sequence, "train.sequence")

    @property
    def augment_params(self) -> AugmentParams:
        """``train.augment`` as the models take it (checked by :meth:`validate`)."""
        return from_mapping(AugmentParams, self.augment, "train.augment")

    @property
    def stroke_augment_params(self) -> StrokeAugmentParams:
        """``train.stroke_augment`` as the on-the-fly input takes it (checked by :meth:`validate`)."""
        return from_mapping(StrokeAugmentParams, self.stroke_augment, "train.stroke_augment")


def check_against(cfg: TrainParams, render_cfg: RenderSection, shard_count: int | None = None) -> None:
    """The train params against the other sections' params: what can be refused before any data
    exists (``stages.check`` runs this before every stage; :func:`doodle.train.ensemble.check_run`
    again, with the data). Raises a one-line ParamError naming the params to change."""
    size, smallest = cfg.raster(render_cfg).size, architecture(cfg.model).min_size
    if cfg.reads_images and size < smallest:
        where = "train.render.size" if "size" in cfg.render else "render.size"
        raise ParamError(
            f"param {where}: {cfg.model} needs images of at least {smallest}px (its pooling leaves nothing of "
            f"smaller ones), got {size}"
        )
    cached = trains_on_cache(render_cfg, cfg.encoder(render_cfg))
    if cached and cfg.stroke_augment_params.any():
        raise ParamError(
            "param train.stroke_augment: needs render.train_cache: false (the cache holds finished images)"
        )
    if cached and cfg.input_processes:
        raise ParamError(
            "param train.input_processes: makes batches drawn on the fly; the cache's are read in the training "
            "process (set render.train_cache: false, or input_processes: 0)"
        )
    if shard_count is not None and cfg.folds > shard_count:
        raise ParamError(too_few_shards(cfg.folds, shard_count))


def trains_on_cache(render_cfg: RenderSection, encoder) -> bool:
    """Whether training reads the render cache's images: with ``render.train_cache``, an image model
    that draws as the cache does (``encoder`` is the render section's raster). Any other model trains
    on batches drawn (or encoded) on the fly from the shards: a stroke model, whose ``encoder`` is no
    raster, and an image model with its own ``train.render``, which validates on drawn images too."""
    return render_cfg.train_cache and render_cfg.draws_as(encoder)


def too_few_shards(folds: int, count: int) -> str:
    return (
        f"param train.folds: {folds} folds need at least {folds} shards (each fold validates on whole "
        f"shards), but shard.count is {count}: lower train.folds or raise shard.count"
    )
