# syntax=docker/dockerfile:1
# The sluice image: a release build on Debian bookworm, copied into distroless (glibc, CA
# certificates, no shell), running as a non-root user.
#
#   docker build -t sluice .
#   docker run -p 4317:4317 -p 4318:4318 -p 8888:8888 -p 13133:13133 sluice
#
# The load generator is in the image too (/usr/local/bin/sluice-loadgen), for demos.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice -p sluice-loadgen \
    && install -D target/release/sluice /out/sluice \
    && install -D target/release/sluice-loadgen /out/sluice-loadgen

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /out/sluice-loadgen /usr/local/bin/
COPY deploy/sluice/image.yaml /etc/sluice/config.yaml
# The persistent queue's home; mount a volume here so the queue outlives the container.
VOLUME ["/var/lib/sluice"]
USER nonroot:nonroot
# OTLP gRPC, OTLP HTTP, self-metrics, health.
EXPOSE 4317 4318 8888 13133
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/sluice", "healthcheck", "--url", "http://127.0.0.1:13133/health"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/config.yaml"]
