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

# torch first, from the CUDA index matching the base image, so the project's
# dependency resolution never swaps it for another build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install --upgrade pip && pip install torch --index-url $TORCH_INDEX

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
RUN pip install .

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
