# hourglass as a container image: built in one stage, shipped in another that holds the binary
# only (distroless: no shell, no package manager), run as a non-root user.
#
#   docker build -t hourglass .        (or: podman build / buildah bud)
#   docker run -p 8787:8787 -v $PWD/hourglass.toml:/etc/hourglass/hourglass.toml:ro hourglass
#
# The configuration must listen on 0.0.0.0 (server.listen) and set client keys — the gateway
# refuses to serve a public address without them. Kubernetes: deploy/kubernetes/.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The `dist` profile: thin LTO, one codegen unit, stripped; profile-guided through the rustc
# wrapper in .cargo/config.toml (scripts/rustc-pgo, pgo/).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p hourglass \
    && install -D -m 0755 target/dist/hourglass /out/hourglass

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/hourglass /usr/local/bin/hourglass
# distroless' `nonroot` user; its home holds the embedded job store unless [cluster] names
# PostgreSQL (or HOURGLASS_DATA_DIR points at a mounted volume).
USER 65532:65532
EXPOSE 8787
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hourglass"]
CMD ["serve", "--config", "/etc/hourglass/hourglass.toml"]
