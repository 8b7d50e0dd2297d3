"""How the Generator deployment is shaped from the settings (no Ray cluster needed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.cluster.generator import generator_deployment, models_per_replica
from app.config import Settings


@dataclass
class Entry:
    load_bytes: int


class Registry:
    def __init__(self, budget: int, sizes: list[int]) -> None:
        self.budget_bytes = budget
        self._entries = [Entry(size) for size in sizes]

    def list(self):
        return self._entries


@pytest.mark.parametrize("budget, sizes, setting, expected", [
    (10 << 30, [2 << 30, 4 << 30], 0, 2),  # the budget holds two of the largest
    (3 << 30, [4 << 30], 0, 1),  # never fewer than one
    (100 << 30, [1 << 30], 0, 8),  # at most eight
    (10 << 30, [2 << 30], 3, 3),  # the setting wins
    (10 << 30, [], 0, 1),  # nothing known
])
def test_models_per_replica_follows_the_memory_budget_unless_set(
        budget, sizes, setting, expected):
    settings = Settings(ray_models_per_replica=setting)
    assert models_per_replica(settings, Registry(budget, sizes)) == expected


def test_the_deployment_places_replicas_by_gpu_and_autoscales_between_min_and_max():
    pytest.importorskip("ray.serve")
    gpu = generator_deployment(Settings(ray_num_gpus=1, ray_min_replicas=1,
                                        ray_max_replicas=4, ray_target_ongoing=1.5), 2)
    config = gpu._deployment_config
    assert gpu.ray_actor_options["num_gpus"] == 1
    assert config.max_ongoing_requests == 1  # one job at a time per device
    assert (config.autoscaling_config.min_replicas,
            config.autoscaling_config.max_replicas) == (1, 4)
    assert config.autoscaling_config.target_ongoing_requests == 1.5
    fixed = generator_deployment(Settings(ray_min_replicas=2, ray_max_replicas=2,
                                          ray_num_cpus=1), 1)
    assert fixed.num_replicas == 2 and "num_gpus" not in fixed.ray_actor_options
