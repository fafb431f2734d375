# The one jobpulse image: `jobpulse run`, `jobpulse dashboard`, `jobpulse produce`, ...
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobpulse jobpulse
COPY stack stack
COPY producer producer
COPY dataflows dataflows
COPY dashboard dashboard
COPY cli cli
RUN pip install --no-cache-dir . && useradd --create-home jobpulse
USER jobpulse
ENV JOBPULSE_STATE_DIR=/tmp/jobpulse
ENTRYPOINT ["jobpulse"]
