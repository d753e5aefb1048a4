# Foresight: one image, two entry points (`foresight-scaler`, `rightsizer`).
#   docker build -t foresight:0.1.0 .
# The build stage turns the source into a wheel and installs it with its dependencies (binary wheels only) into
# /opt/foresight; the runtime stage copies that virtualenv onto the same slim base: no compiler, no pip cache,
# no source tree. Pin the base by digest in your registry mirror (`docker buildx imagetools inspect <tag>`).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forecasting/ forecasting/
COPY scaler_service/ scaler_service/
COPY rightsizer/ rightsizer/
COPY scripts/install_venv.sh /usr/local/bin/install_venv.sh
RUN install_venv.sh /src /wheels /opt/foresight

FROM ${BASE_IMAGE} AS runtime
# Keep in step with pyproject.toml's version and the manifests' image tags (a test checks all three).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="foresight" \
      org.opencontainers.image.description="Predictive autoscaling (KEDA external scaler) and Azure VM rightsizing" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The same uid/gid as the manifests' runAsUser/runAsGroup (10001), so files on volumes match.
RUN groupadd --system --gid 10001 foresight \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin foresight
COPY --from=build /opt/foresight /opt/foresight
# The root filesystem is read-only in the manifests: Prophet's cmdstan writes its data and output files under
# TMPDIR and matplotlib its cache under MPLCONFIGDIR, both on the /tmp emptyDir; nothing writes bytecode.
ENV PATH=/opt/foresight/bin:${PATH} \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
# gRPC (KEDA) and HTTP (/metrics, /forecast, /healthz).
EXPOSE 9090 8080
CMD ["foresight-scaler", "serve"]
