# Runnable image of kidney-node. CPU torch by default; for CUDA build with e.g.
#   --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#   --build-arg PIP_OPTS="--extra-index-url https://download.pytorch.org/whl/cu124"
# (the base must provide python3 >= 3.11 with venv).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_OPTS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KIDNEY_NODE_HTTP__HOST=127.0.0.1

# dcmtk: dcmdjpeg decodes 12-bit JPEG Extended (service/imaging/dcmtk_decode.py).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make dcmtk \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 kidney
WORKDIR /opt/kidney-node
COPY --chown=1000:1000 . .
USER 1000:1000
RUN make install PIP_OPTS="${PIP_OPTS}"

VOLUME ["/opt/kidney-node/var"]
EXPOSE 11112 8080
HEALTHCHECK --interval=30s --timeout=5s CMD ["/opt/kidney-node/.venv/bin/python", "-c", "import socket; socket.create_connection(('127.0.0.1', 11112), 3)"]
ENTRYPOINT ["/opt/kidney-node/.venv/bin/kidney-node", "--config", "config/kidney-node.yaml"]
CMD ["serve"]
