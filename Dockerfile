# The renewer image: `renewer` plus the edge filter's wasm, on a small non-root runtime.
#
#   Cloud Run job:      (default command)  renewer run
#   Cloud Run service:  args ["serve"]     listens on $PORT
#   app nodes:          args ["sync", "--watch"]; the node copies /opt/acme-edge/edge_filter.wasm
#                       out of the image for Envoy (deploy/node/startup.sh)
#
# Built remotely by `make deploy` (Cloud Build); no local Docker is needed. Settings come from
# RENEWER__<SECTION>__<FIELD> variables (renewer/README.md): the config file baked in below
# only exists because the renewer reads one.

# --- build: the renewer (host) and the filter (wasm32) -------------------------------------
# The toolchain CI builds and tests with (rustc 1.95); the workspace MSRV is 1.91.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
# trim-exports drops the callbacks the filter leaves empty, as scripts/wasm.sh does.
RUN cargo build --release --locked -p renewer \
 && cargo build --release --locked -p edge-filter --lib --target wasm32-unknown-unknown \
 && install -D -m 0755 target/release/renewer /out/usr/local/bin/renewer \
 && install -d /out/opt/acme-edge \
 && cargo run --release --locked -p edge-filter --bin trim-exports -- \
        target/wasm32-unknown-unknown/release/edge_filter.wasm /out/opt/acme-edge/edge_filter.wasm \
 && chmod 0644 /out/opt/acme-edge/edge_filter.wasm \
 && install -d /out/etc/acme-edge \
 && install -D -m 0644 -t /out/etc/acme-edge/roots renewer/roots/*.pem \
 && printf '%s\n' '# Settings come from RENEWER__<SECTION>__<FIELD> environment variables.' \
        > /out/etc/acme-edge/renewer.toml

# --- runtime: glibc, CA certificates, no shell, uid 65532 ----------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
ENV RENEWER_CONFIG=/etc/acme-edge/renewer.toml \
    RENEWER_LOG_FORMAT=json
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/renewer"]
CMD ["run"]
