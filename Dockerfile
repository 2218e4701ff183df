# The broaden backend and worker image (one image, two commands). It carries what serving
# needs: the offline tools' extra (`broaden[lab]`: simulate, plots) and espeak-ng (demo data) stay out.
FROM python:3.11-slim

# CPU-only torch (the default wheels carry CUDA libraries: several GB more). Override
# TORCH_INDEX_URL with a mirror, or with https://pypi.org/simple for the default wheels.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.11.0 torchaudio==2.11.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY broaden broaden
COPY backend backend
COPY workers workers
RUN pip install --no-cache-dir .

# Not root: the process owns only its cache volume.
RUN useradd --create-home --uid 10001 broaden && mkdir -p /data && chown broaden /data
USER broaden
ENV HF_HUB_OFFLINE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    BROADEN_CACHE_DIR=/data/cache \
    MALLOC_MMAP_THRESHOLD_=4294967296 \
    MALLOC_TRIM_THRESHOLD_=68719476736
VOLUME /data
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=4)"
CMD ["broaden", "serve"]
