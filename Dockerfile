# syntax=docker/dockerfile:1
# tml-twhin trainer image (linux/amd64), the code at /usr/src/app:
#
#   docker build -t tml-twhin .                                  CUDA 13.0 (make image)
#   docker build --build-arg VARIANT=cpu -t tml-twhin:cpu .      no GPU (make image-cpu)
#   docker build --target tensorboard -t tml-twhin-tensorboard .
#
# The Python stack is requirements.txt, the pins `make setup` installs, through
# tools/image-requirements.sh. The PyPI wheels of torch and fbgemm-gpu carry the whole CUDA user
# space, so a plain Python base is enough; the host needs an NVIDIA driver of the R580 branch or
# newer and the NVIDIA Container Toolkit (see README, "Run with Docker").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# TensorBoard alone, for `docker compose --profile tensorboard up`: no torch in it; its pin is
# requirements.txt's.
FROM ${PYTHON_IMAGE} AS tensorboard
RUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    pip install --no-cache-dir --disable-pip-version-check \
        "$(grep '^tensorboard==' /tmp/requirements.txt)" \
    && useradd --uid 1000 --create-home tml
USER 1000:1000
EXPOSE 6006
ENTRYPOINT ["tensorboard", "--bind_all", "--port", "6006"]
CMD ["--logdir", "/save"]

# The trainer; last, so a plain `docker build .` makes it.
FROM ${PYTHON_IMAGE} AS trainer
# cuda: PyPI's torch and fbgemm-gpu (CUDA 13.0); cpu: torch from the CPU wheel index and
# fbgemm-gpu-cpu, about 1.5 GB instead of 5-6.
ARG VARIANT=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# XDG_CACHE_HOME: torch/triton caches must work for whatever uid the container runs as (TML_UID).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/usr/src/app \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    XDG_CACHE_HOME=/tmp/.cache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The save dir belongs to the runtime user so a fresh named volume mounted there is writable.
RUN useradd --uid 1000 --create-home tml \
    && mkdir -p /config /save /data \
    && chown tml:tml /save \
    && python -m venv "$VIRTUAL_ENV"

# Dependencies before code: editing tml/ must not reinstall torch. The steps mirror `make setup`:
# torchrec goes in --no-deps, and the pins double as constraints so nothing can move torch.
COPY requirements.txt tools/image-requirements.sh /tmp/pins/
RUN --mount=type=cache,target=/root/.cache/pip \
    sh /tmp/pins/image-requirements.sh "$VARIANT" /tmp/pins/requirements.txt > /tmp/pins/image.txt \
    && if [ "$VARIANT" = cpu ]; then \
        pip install --index-url "$TORCH_CPU_INDEX" "$(grep '^torch==' /tmp/pins/image.txt)"; \
    fi \
    && grep -v '^torchrec==' /tmp/pins/image.txt > /tmp/pins/deps.txt \
    && pip install -c /tmp/pins/image.txt -r /tmp/pins/deps.txt \
    && pip install --no-deps "$(grep '^torchrec==' /tmp/pins/image.txt)" \
    && cuda=$(python -c 'import torch; print(torch.version.cuda or "none")') \
    && case "$VARIANT:$cuda" in \
        cuda:13.* | cpu:none) ;; \
        *) echo "error: VARIANT=$VARIANT installed torch with CUDA $cuda" >&2; exit 1 ;; \
    esac \
    && rm -rf /tmp/pins

WORKDIR /usr/src/app
# Configs say data/...: relative to this directory, that is the data volume mounted at /data.
RUN ln -s /data data
COPY pyproject.toml ./
COPY configs ./configs
COPY tml ./tml
COPY --chmod=0755 entrypoint.sh ./

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
ENTRYPOINT ["/usr/src/app/entrypoint.sh"]
CMD ["train"]
