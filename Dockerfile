# The `usher` binary in a small image. Used by compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin usher

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/usher usher && mkdir -p /var/lib/usher && chown usher /var/lib/usher
COPY --from=build /src/target/release/usher /usr/local/bin/usher
USER usher
WORKDIR /var/lib/usher
# 9464: the admin listener (/metrics, /status); publish it only to operators.
EXPOSE 50051 8080 9464
ENV USHER_GRPC_ADDR=0.0.0.0:50051 USHER_HTTP_ADDR=0.0.0.0:8080 USHER_ADMIN_ADDR=0.0.0.0:9464 USHER_DATA_DIR=/var/lib/usher
ENTRYPOINT ["usher"]
CMD ["serve"]
