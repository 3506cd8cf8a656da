# syntax=docker/dockerfile:1
# parva's container image: `parva` and `parva-worker` (libtorch 2.11, CUDA 13) with the model set's
# metadata, for the workloads `parva export k8s` writes (segments and router run the same image).
#
#   docker build -t parva:0.1.0 .                       # models mounted at /opt/parva/models
#   docker build --build-arg MODELS=1 -t parva:0.1.0 .  # models baked in (random weights: traced
#                                                       # torchvision CNNs and BERT, ~4 GB)
#
# The GPU Operator's container toolkit injects the driver (libcuda, NVML and the MPS control
# daemon, `nvidia-cuda-mps-control`) for the capabilities below.

ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM rust:1.95-bookworm AS build
# cmake + libclang build the HiGHS solver from source, linked statically so that the binaries need
# nothing beside them (PARVA_HIGHS_FROM_SOURCE: not the prebuilt shared library scripts/bootstrap
# links in a checkout); scripts/bootstrap fetches libtorch from the PyPI wheel.
ENV PARVA_HIGHS_FROM_SOURCE=1
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN eval "$(scripts/bootstrap --torch)" \
    && cargo build --release --locked -p parva -p parva-worker \
    && install -D -m 0755 target/release/parva target/release/parva-worker -t /out/bin

FROM ${CUDA_IMAGE}
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
# torch 2.11 with its CUDA 13 libraries (cuBLAS, cuDNN, ...): parva-worker loads libtorch from it;
# torchvision only to export models at build time.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/torch \
    && /opt/torch/bin/pip install --no-cache-dir torch==2.11.0 torchvision==0.26.0
ENV LD_LIBRARY_PATH=/opt/torch/lib/python3.12/site-packages/torch/lib
COPY --from=build /out/bin/ /usr/local/bin/
COPY models/ /opt/parva/models/
COPY scripts/export_models.py /opt/parva/scripts/
ARG MODELS=0
RUN if [ "$MODELS" = 1 ]; then /opt/torch/bin/python /opt/parva/scripts/export_models.py --out /opt/parva/models; fi
WORKDIR /opt/parva
EXPOSE 8000
# The workloads name their command (`parva segment ...`, `parva route ...`).
CMD ["parva", "--help"]
