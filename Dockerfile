# syntax=docker/dockerfile:1
#
# One Dockerfile, three images (see docs/deploy.md):
#   serve-cpu  slim Python + ONNX Runtime / OpenVINO; no torch, no compilers
#   serve-gpu  NVIDIA CUDA + cuDNN runtime, ONNX Runtime's CUDA build (+ TensorRT with WITH_TENSORRT=1); no compilers
#   train      torch + the train/export extras (make-dataset, train, export)
#
#   docker build --target serve-cpu -t yoloxpai:serve-cpu .
#
# Every image installs the project into /opt/venv in a builder stage and copies only that venv into the final
# stage, so caches and the source tree stay out of the serving images (and the serving venvs drop pip itself). It uses no BuildKit-only syntax
# (no RUN --mount), so the classic builder works too.
#
# Offline builds: put wheels in .whl/ (`pip download -d .whl ...`, see docs/deploy.md) and the builders install
# from there alone (PIP_NO_INDEX); without .whl/ they use the package index. `.whl/` and `bundles/` are optional:
# `COPY .dockerignore .whl* DEST` always has one source that exists, so the classic builder accepts a context
# without them (it rejects a wildcard that matches nothing).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# ONNX Runtime's CUDA provider loads libcudart, cuBLAS and cuDNN 9 from the image (hence the cudnn variant); the
# CUDA major must be the pinned onnxruntime-gpu wheel's (constraints.txt: 13). TensorRT's cu13 wheels bring
# libnvinfer themselves. Hosts need a driver for CUDA 13 (R580 or newer).
ARG CUDA_IMAGE=nvidia/cuda:13.1.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------------------
# Dependencies first, against stub packages, so editing the source does not re-download every wheel. The stubs
# and setuptools' build/ go afterwards: build/ would otherwise feed the stale stub files into the real install.
FROM ${PYTHON_IMAGE} AS deps-cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY .dockerignore .whl* /src/.whl/
RUN set -eu; \
    if ls /src/.whl/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/.whl; fi; \
    mkdir -p model service yoloxpai; touch model/__init__.py service/__init__.py yoloxpai/__init__.py; \
    python -m venv /opt/venv; \
    /opt/venv/bin/pip install -c constraints.txt ".[serve]"; \
    rm -rf model service yoloxpai build ./*.egg-info

FROM deps-cpu AS builder-cpu
# A bundle directory under bundles/ in the build context (e.g. bundles/shapes) to bake in as /models/<its name>;
# empty: the embedded default model, as /models/default.
ARG BUNDLE=""
COPY model model
COPY service service
COPY yoloxpai yoloxpai
COPY .dockerignore bundle[s] /src/bundles/
RUN set -eu; \
    if ls /src/.whl/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/.whl; fi; \
    /opt/venv/bin/pip install --no-deps --force-reinstall -c constraints.txt .; \
    mkdir -p /models; \
    if [ -n "$BUNDLE" ]; then \
        cp -r "/src/$BUNDLE" "/models/$(basename "$BUNDLE")"; \
    else \
        cp -r "$(/opt/venv/bin/python -c 'from model.artifacts import default_bundle_dir; print(default_bundle_dir())')" \
            /models/default; \
    fi; \
    chmod -R u=rwX,go=rX /models; \
    /opt/venv/bin/yoloxpai serve --help >/dev/null; \
    /opt/venv/bin/python -m pip uninstall -y -q pip

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS serve-cpu
LABEL org.opencontainers.image.title="yoloxpai serve (CPU)" \
      org.opencontainers.image.source="https://github.com/yoloxpai/yoloxpai" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd lookups.
RUN groupadd --system --gid 10001 yoloxpai \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin yoloxpai
COPY --from=builder-cpu /opt/venv /opt/venv
# Owned by root, readable by all (modes fixed in the builder, whatever the build context's were): the server (uid
# 10001) can read the baked-in bundles but not replace them, even where the root filesystem is writable.
COPY --from=builder-cpu /models /models
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes. XDG_CACHE_HOME: runtimes that cache
# (OpenVINO, TensorRT timing caches) write under /tmp, the one writable mount.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    YOLOXPAI_MODEL_REPOSITORY=/models
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001
# Liveness only (/healthz): a container that is loading or draining is alive. Readiness (/readyz) is for load
# balancers; an orchestrator that restarts on "unhealthy" must never restart a pod that is still loading a model.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('YOLOXPAI_HTTP_PORT', '8000'), timeout=2)"]
# Exec form: the server is PID 1 and gets SIGTERM itself; it installs its own handler (drain, then exit), which a
# PID 1 needs because the kernel applies no default action to it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["yoloxpai"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------------------
# GPU: the CUDA base ships its own Python (3.12 on Ubuntu 24.04); builder and final stage share the base so the
# venv's interpreter path is the same in both. The runtime is ONNX Runtime's CUDA build (the `gpu` extra, which
# replaces the CPU `serve` runtimes: onnxruntime-gpu provides the same `onnxruntime` module). WITH_TENSORRT=1 adds
# the `trt` extra (TensorRT, from NVIDIA's wheels: e.g. --build-arg PIP_EXTRA_INDEX_URL=https://pypi.nvidia.com
# where the index you use lacks them); `--backend auto` then prefers TensorRT. tests/deploy reads the case below.
FROM ${CUDA_IMAGE} AS builder-gpu
ARG WITH_TENSORRT=0
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY .dockerignore .whl* /src/.whl/
# The checks after the install fail the build rather than ship an image that would silently run on the CPU: a
# CPU onnxruntime pulled in beside onnxruntime-gpu (both write the same module files), or an ONNX Runtime without
# the CUDA provider. Listing providers needs no GPU.
RUN set -eu; \
    if ls /src/.whl/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/.whl; fi; \
    case "$WITH_TENSORRT" in \
        0) extras=gpu ;; \
        1) extras=gpu,trt ;; \
        *) echo "WITH_TENSORRT must be 0 or 1, not '$WITH_TENSORRT'" >&2; exit 1 ;; \
    esac; \
    mkdir -p model service yoloxpai; touch model/__init__.py service/__init__.py yoloxpai/__init__.py; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -c constraints.txt ".[$extras]"; \
    if /opt/venv/bin/pip show -q onnxruntime 2>/dev/null; then \
        echo "the CPU onnxruntime wheel was installed beside onnxruntime-gpu" >&2; exit 1; \
    fi; \
    /opt/venv/bin/python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()"; \
    rm -rf model service yoloxpai build ./*.egg-info
ARG BUNDLE=""
COPY model model
COPY service service
COPY yoloxpai yoloxpai
COPY .dockerignore bundle[s] /src/bundles/
RUN set -eu; \
    if ls /src/.whl/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/.whl; fi; \
    /opt/venv/bin/pip install --no-deps --force-reinstall -c constraints.txt .; \
    mkdir -p /models; \
    if [ -n "$BUNDLE" ]; then cp -r "/src/$BUNDLE" "/models/$(basename "$BUNDLE")"; fi; \
    chmod -R u=rwX,go=rX /models; \
    /opt/venv/bin/yoloxpai serve --help >/dev/null; \
    /opt/venv/bin/python -m pip uninstall -y -q pip

FROM ${CUDA_IMAGE} AS serve-gpu
LABEL org.opencontainers.image.title="yoloxpai serve (NVIDIA GPU: ONNX Runtime CUDA, optional TensorRT)" \
      org.opencontainers.image.licenses="Apache-2.0"
# python3 only: no pip, no venv module, no compilers in the serving image. The engine cache directory belongs to
# the server user, so a new named volume mounted there (Docker copies the owner) is writable.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 yoloxpai \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin yoloxpai \
 && mkdir -p /var/cache/yoloxpai/engines \
 && chown 10001:10001 /var/cache/yoloxpai/engines
COPY --from=builder-gpu /opt/venv /opt/venv
# Root-owned and read-only to uid 10001, as in serve-cpu.
COPY --from=builder-gpu /models /models
# GPU bundles come from /models at run time (a volume), not from the image, unless BUNDLE baked one in.
# YOLOXPAI_ENGINE_CACHE: TensorRT engines built at load (minutes each, keyed by GPU model and TensorRT version).
# A volume, so the read-only root does not stop them being written; mount a persistent one there (a named volume,
# the gpu overlay's PersistentVolumeClaim) so a restarted or new container reuses them instead of rebuilding.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    YOLOXPAI_MODEL_REPOSITORY=/models \
    YOLOXPAI_DEVICE=cuda:0 \
    YOLOXPAI_ENGINE_CACHE=/var/cache/yoloxpai/engines
VOLUME ["/var/cache/yoloxpai/engines"]
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('YOLOXPAI_HTTP_PORT', '8000'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["yoloxpai"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------------------
# Training: torch from TORCH_INDEX_URL (CPU wheels by default; a CUDA index for GPU nodes, see docs/deploy.md).
FROM ${PYTHON_IMAGE} AS builder-train
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY .dockerignore .whl* /src/.whl/
RUN set -eu; \
    if ls /src/.whl/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/.whl; fi; \
    mkdir -p model service yoloxpai; touch model/__init__.py service/__init__.py yoloxpai/__init__.py; \
    python -m venv /opt/venv; \
    /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" -c constraints.txt torch; \
    /opt/venv/bin/pip install -c constraints.txt ".[train,export]"; \
    rm -rf model service yoloxpai build ./*.egg-info
COPY model model
COPY service service
COPY yoloxpai yoloxpai
RUN set -eu; \
    if ls /src/.whl/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/.whl; fi; \
    /opt/venv/bin/pip install --no-deps --force-reinstall -c constraints.txt .

FROM ${PYTHON_IMAGE} AS train
LABEL org.opencontainers.image.title="yoloxpai train" \
      org.opencontainers.image.licenses="Apache-2.0"
# /data, /runs and /models owned by the training user: a new, empty Docker volume mounted there takes the
# directory's owner, so the non-root user can write to it.
RUN groupadd --system --gid 10001 yoloxpai \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin yoloxpai \
 && mkdir -p /data /runs /models \
 && chown 10001:10001 /data /runs /models
COPY --from=builder-train /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["yoloxpai"]
CMD ["--help"]
