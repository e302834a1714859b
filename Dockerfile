# roadwatch worker / gateway / simulator image (production runs against real Kafka: docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY models ./models
COPY geo ./geo
COPY simulators ./simulators
# gcc for the native helpers (the gateway's front end streams/jt808/_frontend.c, gateway.front_end; Kafka's
# murmur2 streams/_kafkahash.c; the evidence writer models/_evidence_io.c): built, then removed
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV ROADWATCH_SET="paths.data_dir=\"/data\""
VOLUME ["/data"]
EXPOSE 6066 7808
ENTRYPOINT ["roadwatch"]
CMD ["worker"]
