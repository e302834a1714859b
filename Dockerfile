# roadwatch worker / gateway / simulator image (production runs against real Kafka: docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY models ./models
COPY geo ./geo
COPY simulators ./simulators
RUN pip install --no-cache-dir .
ENV ROADWATCH_SET="paths.data_dir=\"/data\""
VOLUME ["/data"]
EXPOSE 6066 7808
ENTRYPOINT ["roadwatch"]
CMD ["worker"]
