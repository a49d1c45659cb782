"""params.yaml section ``shard``: how many shards, which validate, and the knobs that change only
speed, memory and disk (``memory_mb``, ``block_mb``, ``workers``, ``spill_dir``), never the shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from doodle.core.params import require
from doodle.core.workers import worker_count


@dataclass
class ShardParams:
    """params.yaml section ``shard``."""

    count: int = 8
    seed: int = 2018
    val_shards: list[int] = field(default_factory=lambda: [-1])
    max_per_class: int | None = None
    recognized_only: bool = False
    row_group_rows: int = 50_000
    memory_mb: float = 8
    block_mb: int = 2
    workers: int | None = None  # processes for both passes; None = one per CPU core
    spill_dir: str | None = None  # pass 1's scratch files; None = inside the output folder (removed at the end)

    def validate(self, where: str = "shard") -> None:
        require(self.count >= 1, f"{where}.count", f"must be >= 1, got {self.count}")
        require(bool(self.val_shards), f"{where}.val_shards", "name at least one validation shard")
        for v in self.val_shards:
            in_range = -self.count <= v < self.count
            require(in_range, f"{where}.val_shards", f"shard {v} is out of range for count={self.count}")
        require(
            len(self.resolved_val_shards()) < self.count or self.count == 1,
            f"{where}.val_shards",
            "leaves no training shard",
        )
        require(
            self.max_per_class is None or self.max_per_class > 0,
            f"{where}.max_per_class",
            "must be a positive number or null",
        )
        require(
            self.row_group_rows > 0 and self.memory_mb > 0 and self.block_mb > 0,
            where,
            "row_group_rows, memory_mb and block_mb must be positive",
        )
        require(
            self.workers is None or self.workers >= 1,
            f"{where}.workers",
            f"must be >= 1 or null (one per core), got {self.workers}",
        )
        require(self.spill_dir is None or bool(str(self.spill_dir).strip()), f"{where}.spill_dir", "empty path")

    def resolved_workers(self) -> int:
        return worker_count(self.workers)

    def resolved_val_shards(self) -> list[int]:
        return sorted({v % self.count for v in self.val_shards})
