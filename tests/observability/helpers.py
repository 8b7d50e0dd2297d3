"""Reading the Prometheus text format in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SERIES = ("bildwerk_queue_depth", "bildwerk_jobs_running", "bildwerk_job_queue_seconds",
          "bildwerk_job_duration_seconds", "bildwerk_model_load_seconds",
          "bildwerk_gpu_memory_bytes")


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(v for n, sample_labels, v in samples(text)
               if n == name and all(sample_labels.get(k) == w for k, w in labels.items()))
