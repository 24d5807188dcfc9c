# One image with every component and the operator's `financing` command line (`docker compose
# exec relayer financing status`); each docker-compose service runs one of its binaries.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir /out \
    && cp target/release/listener target/release/command-handler target/release/relayer \
          target/release/projector target/release/queries target/release/populate \
          target/release/financing /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
ENV RUST_LOG=info
