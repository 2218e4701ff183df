# The broaden backend and worker image (one image, two commands). It carries what serving
# needs: the offline tools' extra (`broaden[lab]`: simulate, plots) and espeak-ng (demo data) stay out.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY broaden broaden
COPY backend backend
COPY workers workers
# Set PIP_EXTRA_INDEX_URL to a CPU-only torch index at build time for a much smaller image.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir .

ENV HF_HUB_OFFLINE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    BROADEN_CACHE_DIR=/data/cache \
    MALLOC_MMAP_THRESHOLD_=4294967296 \
    MALLOC_TRIM_THRESHOLD_=68719476736
VOLUME /data
EXPOSE 9090
CMD ["broaden", "serve"]
