# The demo app as a container: docker build -t grpc-serverfn . && docker run -p 50051:50051 -p 8080:8080 grpc-serverfn
# (gRPC on 50051; Connect and gRPC-Web for browsers on 8080, the web port).
# Serve your own app by mounting or copying it and overriding the command:
#   docker run -v $PWD/app.py:/srv/app.py grpc-serverfn grpc-serverfn serve /srv/app.py:fns
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SERVERFN_HOST=0.0.0.0 \
    SERVERFN_PORT=50051

RUN useradd --create-home --uid 10001 serverfn
WORKDIR /srv

# The package, installed from the source tree (the same `pip install .` scripts/serve runs), with
# the redis extra so that replicas can share resumable streams (SERVERFN_STREAM_STORE=redis://...),
# the metrics extra for `serve --metrics-port` (SERVERFN_METRICS_PORT) and the web extra for
# `serve --web-port` (browsers: Connect, gRPC-Web, and a UI's files with --web-root).
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY grpc_serverfn ./grpc_serverfn
RUN pip install ".[redis,metrics,web]" && rm -rf build

COPY examples ./examples

USER serverfn
EXPOSE 50051 8080
# The standard gRPC health service, asked by a command the image has.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["grpc-serverfn", "health", "localhost:50051"]
# SIGTERM drains in-flight streams for --grace seconds; a second SIGTERM exits at once.
STOPSIGNAL SIGTERM
# The demo serves browsers too; a command of your own adds --web-port (or SERVERFN_WEB_PORT) if
# it wants them, so that the image's default never opens a port your app did not ask for.
CMD ["grpc-serverfn", "serve", "examples/demo.py:fns", "--grace", "10", "--web-port", "8080"]
