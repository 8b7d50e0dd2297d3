# Bildwerk on CUDA. Build: docker build -t bildwerk .
# Run:   docker run --gpus all -p 8000:8000 -v $PWD/models:/models -v bildwerk-data:/data bildwerk
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv $VIRTUAL_ENV

WORKDIR /app
# Every dependency from the lock (pinned, hash-checked, no resolution), then the CUDA
# build of torch from the index matching the base image: its pure-Python dependencies are
# already there at the locked versions, so it adds only the CUDA libraries.
COPY requirements ./requirements
# EXTRAS=ray: the Ray executor's lock instead (ray[serve], redis) for Ray clusters and
# KubeRay (docs/deploy.md): `docker build --build-arg EXTRAS=ray .`
ARG EXTRAS=
RUN pip install --upgrade pip \
 && pip install --no-deps --require-hashes -r requirements/${EXTRAS:-runtime}.txt
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# torchvision (which spandrel, the upscaler loader, declares) must match torch's build
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
      --index-url $TORCH_INDEX

COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
RUN pip install --no-deps . && pip check
# The kiosk's visitor page (BILDWERK_KIOSK_PAGE=true serves it at /kiosk/): static files,
# read from clients/kiosk under the working directory (a wheel does not carry them).
COPY clients/kiosk ./clients/kiosk

RUN useradd --create-home --uid 10001 bildwerk \
 && mkdir -p /data /models && chown bildwerk:bildwerk /data /models
USER bildwerk

ENV BILDWERK_DATA_DIR=/data \
    BILDWERK_MODELS_DIR=/models \
    BILDWERK_DEVICE=auto \
    HF_HUB_OFFLINE=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["bildwerk", "serve", "--host", "0.0.0.0", "--port", "8000"]
