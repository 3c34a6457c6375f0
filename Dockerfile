# syntax=docker/dockerfile:1
# tml-twhin trainer image (linux/amd64), the code at /usr/src/app:
#
#   make image         CUDA 13.0 (docker build --build-arg VARIANT=cuda ... -t tml-twhin:VERSION .)
#   make image-cpu     no GPU (VARIANT=cpu): about 1.6 GB instead of 8.4 (docs/deployment.md)
#   docker build --target tensorboard -t tml-twhin-tensorboard .
#
# The Python stack is locks/<variant>.txt: every package, transitive ones included, pinned with
# its sha256 (`make lock` derives the locks from requirements.txt's runtime pins). PyPI's torch
# and fbgemm-gpu wheels carry the whole CUDA user space, so a plain Python base is enough; the
# host needs an NVIDIA driver of the R580 branch or newer and the NVIDIA Container Toolkit
# (docs/deployment.md). `make image` passes the OCI label values below from git.

# python:3.11.9-slim-bookworm, pinned by the digest of its multi-platform index, as Renovate
# recorded it on 2024-04-12 (nalabelle/build, images/digests.Dockerfile, commit b709b6a). Refresh
# with `docker buildx imagetools inspect python:3.11-slim-bookworm` and a rebuild.
ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm@sha256:dad770592ab3582ab2dabcf0e18a863df9d86bd9d23efcfa614110ce49ac20e4

# What both images share: tini as PID 1 (reaps the launcher's orphans and passes the
# scheduler's SIGTERM on, under Kubernetes and plain `docker run` alike) and the runtime user.
# No labels here: the two images below carry them, set last so that their per-commit values
# never invalidate a layer.
# hadolint ignore=DL3049
FROM ${PYTHON_IMAGE} AS runtime-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && useradd --uid 1000 --create-home tml
# pip: no version check, no root warning; its cache is a BuildKit cache mount at its default for
# root (the install steps below), never a layer.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1

# TensorBoard alone, for `docker compose --profile tensorboard up`: no torch in it.
FROM runtime-base AS tensorboard
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY locks/tensorboard.txt /tmp/lock.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VIRTUAL_ENV" \
    && pip install --require-hashes --no-deps -r /tmp/lock.txt \
    && rm /tmp/lock.txt
USER 1000:1000
EXPOSE 6006
ENTRYPOINT ["tini", "--", "tensorboard", "--bind_all", "--port", "6006"]
CMD ["--logdir", "/save"]
ARG VERSION=dev REVISION=unknown CREATED=unknown SOURCE=unknown
LABEL org.opencontainers.image.title="tml-twhin-tensorboard" \
    org.opencontainers.image.description="TensorBoard for tml-twhin runs" \
    org.opencontainers.image.source="$SOURCE" \
    org.opencontainers.image.revision="$REVISION" \
    org.opencontainers.image.version="$VERSION" \
    org.opencontainers.image.created="$CREATED"

# The trainer's packages. cuda: PyPI's torch and fbgemm-gpu (CUDA 13.0); cpu: torch from
# PyTorch's CPU wheel index and fbgemm-gpu-cpu. Keyed on this variant's lock alone: editing tml/
# or bumping a lint tool (requirements-dev.txt) never reinstalls torch. --no-deps: the lock is
# the whole set.
# hadolint ignore=DL3049
FROM runtime-base AS packages
ARG VARIANT=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY locks/${VARIANT}.txt /tmp/lock.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "$VIRTUAL_ENV" \
    && if [ "$VARIANT" = cpu ]; then set -- --extra-index-url "$TORCH_CPU_INDEX"; fi \
    && pip install --require-hashes --no-deps "$@" -r /tmp/lock.txt \
    && rm /tmp/lock.txt

# The imports the trainer makes, in a stage of their own (the CUDA check compiles a stub of the
# driver's NVML; see the script): a wrong wheel fails the build, not the first job on the cluster.
# hadolint ignore=DL3049
FROM packages AS import-check
ARG VARIANT=cuda
COPY tools/check-image-imports.sh /tmp/
RUN sh /tmp/check-image-imports.sh "$VARIANT" /tmp/imports-checked

# The trainer; last, so a plain `docker build .` makes it.
FROM packages AS trainer
ARG VARIANT=cuda
# TML_DEVICE=cuda makes the trainer refuse a machine without a usable GPU (tml.core.device_check)
# instead of training on one CPU core; TML_DEVICE=cpu at `docker run` opts in to CPU.
ENV PYTHONPATH=/usr/src/app \
    TML_DEVICE=$VARIANT \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# What the import check found (and a dependency on it, so the check always runs).
COPY --from=import-check /tmp/imports-checked /opt/venv/IMPORTS_CHECKED

# Caches of torch and triton at run time: set after the install, so pip's cache stays in its
# mount. /tmp is writable by any uid (TML_UID, runAsUser); nothing creates .cache in the image.
ENV XDG_CACHE_HOME=/tmp/.cache
# The save dir belongs to the runtime user, so a fresh named volume mounted there is writable.
RUN mkdir -p /config /save /data && chown tml:tml /save

WORKDIR /usr/src/app
# Configs say data/...: relative to this directory, that is the data volume mounted at /data.
RUN ln -s /data data
COPY pyproject.toml ./
COPY configs ./configs
COPY tml ./tml
COPY --chmod=0755 entrypoint.sh ./

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
ENTRYPOINT ["tini", "--", "/usr/src/app/entrypoint.sh"]
CMD ["train"]
# Last: values that change with every commit must not invalidate the layers above.
ARG VERSION=dev REVISION=unknown CREATED=unknown SOURCE=unknown
LABEL org.opencontainers.image.title="tml-twhin" \
    org.opencontainers.image.description="TwHIN graph embeddings on TorchRec ($VARIANT)" \
    org.opencontainers.image.source="$SOURCE" \
    org.opencontainers.image.revision="$REVISION" \
    org.opencontainers.image.version="$VERSION" \
    org.opencontainers.image.created="$CREATED"
