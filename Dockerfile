# helpdesk-connector: the routing daemon (and its CLI) in a container.
#
#   docker build -t helpdesk-connector .
#   docker run -d --name helpdesk-connector \
#       -v /etc/helpdesk-connector:/config:ro -v helpdesk-connector-state:/state \
#       helpdesk-connector                       # = helpdesk-connector run --config /config/config.yaml
#   docker run --rm -v /etc/helpdesk-connector:/config:ro helpdesk-connector check-config /config/config.yaml
#
# CPU by default: torch==2.13.0 from PyTorch's CPU wheel index (a plain "torch" from PyPI would pull
# gigabytes of CUDA libraries the container cannot use).
# GPU: build on a CUDA runtime image that has Python 3.11 and take torch from the matching CUDA index, e.g.
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t helpdesk-connector:cuda .
# (install python3.11 + python3.11-venv in that image first) and run with `--gpus all`; with `model.device: auto`
# the daemon picks the GPU and runs the model in half precision.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/helpdesk-connector
ENV PATH=/opt/helpdesk-connector/bin:$PATH
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY adapters ./adapters
COPY connector ./connector
RUN pip install ".[postgres]"

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /state --no-create-home --shell /usr/sbin/nologin connector \
 && mkdir -p /config /state \
 && chown connector:connector /state && chmod 0750 /state
COPY --from=build /opt/helpdesk-connector /opt/helpdesk-connector
ENV PATH=/opt/helpdesk-connector/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/state/.cache/huggingface \
    HELPDESK_CONNECTOR_CONFIG=/config/config.yaml \
    HELPDESK_CONNECTOR_STATE_DIR=/state
USER connector
WORKDIR /state
# /config: config.yaml (+ secret files, read-only); /state: SQLite database, trained models, exports
VOLUME ["/config", "/state"]
# healthy while every enabled system was polled recently (a helpdesk being down does not make the daemon unhealthy)
HEALTHCHECK --interval=60s --timeout=30s --start-period=180s --retries=3 \
    CMD ["helpdesk-connector", "status", "--check"]
# SIGTERM: the daemon finishes the batch in flight within daemon.shutdown_timeout, then exits 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["helpdesk-connector"]
CMD ["run"]
