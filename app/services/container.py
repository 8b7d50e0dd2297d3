"""The one composition root: :func:`build_services` wires every part from the settings.

``create_app`` (the server's lifespan) and every CLI command use it, so a command sees the
same registry (hub repos, memory budget, hash cache), database and prompt service as the
server. Parts are built on first use: ``bildwerk keys list`` opens the database and
nothing else; the server touches everything at start.

The path of one request through the parts::

    router -> checks/planning (a JobPlan) -> admission -> executor -> runner
           (pipeline or provider) -> result and record
"""

from __future__ import annotations

from functools import cached_property

from app.config import Settings
from app.jobs.job import Job
from app.jobs.owners import OwnerLimit
from app.jobs.queue import JobQueue
from app.persistence.blobs import BlobStore
from app.persistence.database import Database
from app.persistence.records import RecordRepository
from app.security.keys import ApiKeyRepository


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- storage ------------------------------------------------------------------------
    @cached_property
    def db(self) -> Database:
        """The database, migrated to the newest schema."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(self.settings.resolved_database_url)
        db.migrate()
        return db

    @cached_property
    def keys(self) -> ApiKeyRepository:
        return ApiKeyRepository(self.db)

    @cached_property
    def records(self) -> RecordRepository:
        return RecordRepository(self.db, instance=self.instance, lease_s=self.settings.lease_s)

    @cached_property
    def instance(self) -> str:
        """This process, as the holder of job leases: host, pid and a random part."""
        import os
        import socket
        import uuid

        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @cached_property
    def bus(self):
        """Job events and cancels shared with the other processes (Redis), when several
        share the work (BILDWERK_CLUSTER, BILDWERK_EXECUTOR=ray); None when alone."""
        if not self.settings.shared or not self.settings.redis_url:
            return None
        from app.jobs.bus import JobBus

        return JobBus(self.settings.redis_url)

    @cached_property
    def leases(self):
        """Renews the leases of this process's unfinished jobs; when several processes
        share the database, also reaps the expired leases of others (app/jobs/leases.py)."""
        from app.jobs.leases import LeaseKeeper

        def held() -> list[str]:
            return [job.record_id for queue in self.queues for job in queue.unfinished()]

        return LeaseKeeper(self.records, held, lease_s=self.settings.lease_s,
                           reap=self.settings.shared, bus=self.bus)

    @cached_property
    def blobs(self) -> BlobStore:
        """The blob store of BILDWERK_BLOB_STORE (folder or bucket), checked to be
        reachable: a wrong endpoint, bucket or credentials fail here, at start."""
        return BlobStore.from_settings(self.settings, self.db)

    # -- models -------------------------------------------------------------------------
    @cached_property
    def runtime(self):
        from app.pipelines.device import resolve_runtime

        return resolve_runtime(self.settings.device, cpu_dtype=self.settings.cpu_dtype,
                               cuda_dtype=self.settings.cuda_dtype)

    @cached_property
    def registry(self):
        """The model registry, scanned (the embedded model built on first start)."""
        from app.pipelines.registry import build_registry

        registry = build_registry(self.settings, self.runtime)
        registry.on_unload.append(
            lambda model_id, loaded: self.loras.forget_model(model_id, loaded.main))
        registry.refresh()
        return registry

    @cached_property
    def loras(self):
        from app.pipelines.lora_catalog import LoraCatalog

        loras = LoraCatalog(self.settings.models_dir,
                            max_resident=self.settings.max_resident_loras)
        loras.refresh()
        return loras

    @cached_property
    def providers(self):
        from app.providers.local import LocalProvider
        from app.providers.registry import ProviderSet, build_providers

        local = LocalProvider(self.registry, max_batch=self.settings.max_images)
        return ProviderSet(build_providers(self.settings, local), self.settings.provider_chains)

    @cached_property
    def upscalers(self):
        """Lanczos, Nearest and the model files in BILDWERK_MODELS_DIR/upscalers/."""
        from app.upscaling.catalog import UpscalerCatalog

        return UpscalerCatalog(self.settings.models_dir / "upscalers")

    @cached_property
    def upscaler_models(self):
        """Loaded upscaler models (least recently used dropped first). spandrel is imported
        here, at start, when there are model files: its import briefly shows other threads
        a placeholder torchvision (app/upscaling/spandrel_import.py)."""
        from app.upscaling.loading import UpscalerModels
        from app.upscaling.spandrel_import import import_spandrel

        if any(entry.kind == "model" for entry in self.upscalers.entries()):
            import_spandrel()
        return UpscalerModels(self.runtime, capacity=self.settings.upscale_models_cached)

    # -- work ---------------------------------------------------------------------------
    @cached_property
    def queues(self) -> tuple[JobQueue, JobQueue]:
        """The device's queue and the remote providers' (workers not started)."""
        s = self.settings

        def record_cancelled(job: Job) -> None:
            self.records.finish(job.record_id, status="cancelled", error_code="cancelled",
                                error_message="cancelled before it started")

        # With Ray, the device queue keeps one job in flight per replica there can be.
        in_flight = s.ray_max_replicas if s.executor == "ray" else 1
        device = "ray" if s.executor == "ray" else self.runtime.name
        from app.services.batching import batch_policy

        batching = batch_policy(s) if s.executor == "local" else None
        return (JobQueue(s.queue_max, s.retry_after_s, device=device,
                         on_cancelled_before_start=record_cancelled, workers=in_flight,
                         batching=batching),
                JobQueue(s.queue_max, s.retry_after_s, device="remote",
                         on_cancelled_before_start=record_cancelled))

    @cached_property
    def owners(self) -> OwnerLimit:
        return OwnerLimit(self.settings.max_queued_per_key, self.settings.retry_after_s,
                          self.queues)

    @cached_property
    def prompts(self):
        """Styles, translators and expanders; a bad style file fails here."""
        from app.services.prompting import build_prompt_service

        return build_prompt_service(self.settings, self.records, self.owners)

    @cached_property
    def runner(self):
        """Runs plans on this process's device and providers (app/services/runner.py)."""
        from app.services.runner import PlanRunner

        return PlanRunner(self.settings, self.registry, self.loras, self.providers,
                          self.blobs, self.records, self.upscaler_models)

    @cached_property
    def executor(self):
        """Local worker threads (the default), or Generator replicas on Ray."""
        if self.settings.executor == "ray":
            from app.cluster.ray_executor import RayExecutor

            return RayExecutor(self.settings, *self.queues, self.runner, self.records,
                               self.bus)
        from app.services.executor import LocalExecutor

        return LocalExecutor(*self.queues, self.runner, bus=self.bus)

    @cached_property
    def planner(self):
        from app.services.checks import InputChecks
        from app.services.planning import Planner

        checks = InputChecks(self.settings, self.registry, self.loras, self.blobs,
                             self.records, self.owners)
        return Planner(checks, self.providers, self.prompts)

    @cached_property
    def admission(self):
        from app.services.admission import Admission
        from app.services.rejections import Rejections

        return Admission(self.records, self.blobs, self.owners, self.executor,
                         Rejections(self.records, self.blobs, self.planner.check),
                         webhooks=self.webhooks)

    @cached_property
    def webhooks(self):
        """Webhook deliveries (app/webhooks/): secrets, the delivery log, the sender."""
        from app.webhooks.log import DeliveryLog
        from app.webhooks.secrets import WebhookSecrets
        from app.webhooks.sender import WebhookSender

        return WebhookSender(self.settings, WebhookSecrets(self.db), DeliveryLog(self.db))

    @cached_property
    def generation(self):
        from app.services.generation import GenerationService

        return GenerationService(self.planner, self.admission)

    @cached_property
    def kiosk(self):
        from app.services.kiosk import KioskService

        return KioskService(self.generation, self.providers, self.records, self.blobs,
                            self.settings)

    @cached_property
    def sequences(self):
        from app.services.sequences import SequenceService

        return SequenceService(self.planner, self.admission)

    @cached_property
    def upscale(self):
        from app.services.upscale import UpscaleService

        return UpscaleService(self.planner.check, self.upscalers, self.upscaler_models,
                              self.admission)

    @cached_property
    def jobs(self):
        from app.services.jobs import JobService

        return JobService(self.executor.queues, self.records, bus=self.bus)

    @cached_property
    def models(self):
        from app.services.models import ModelService

        return ModelService(self.registry, self.loras, self.queues[0],
                            self.settings.sync_timeout_s)

    def close(self) -> None:
        """Stop the workers (if started) and close the database."""
        if "executor" in self.__dict__:
            self.executor.stop_workers()
        if "leases" in self.__dict__:
            self.leases.stop()
        if self.__dict__.get("bus") is not None:
            self.bus.close()
        if "db" in self.__dict__:
            self.db.dispose()


def build_services(settings: Settings) -> Services:
    return Services(settings)
