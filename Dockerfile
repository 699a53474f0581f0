# syntax=docker/dockerfile:1

# Build stage: a static binary (no C library needed at run time).
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so code changes reuse the downloaded modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/gpubot .
# The volume's mount point, handed to the non-root user below so that a fresh
# named volume, which copies its ownership, is writable.
RUN mkdir -p /out/data

# Run stage: distroless static has CA certificates and time zones, no shell,
# and runs as the unprivileged "nonroot" user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gpubot /gpubot
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV DB_PATH=/data/gpubot.db
VOLUME /data
EXPOSE 8080
HEALTHCHECK CMD ["/gpubot", "healthcheck"]
ENTRYPOINT ["/gpubot"]
CMD ["serve"]
