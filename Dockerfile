# kudo: a static (musl) binary on distroless/static, running as non-root.
#   docker build -t kudo:dev .
# Stage 1 builds on Alpine, where the Rust toolchain targets musl natively; OpenSSL, libssh2
# and zlib (git2's https and ssh transports) are linked statically.
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev pkgconf perl make \
      openssl-dev openssl-libs-static libssh2-dev libssh2-static zlib-dev zlib-static
ENV OPENSSL_STATIC=1 LIBSSH2_STATIC=1 LIBZ_SYS_STATIC=1 PKG_CONFIG_ALL_STATIC=1 \
    RUSTFLAGS="-C target-feature=+crt-static"
WORKDIR /src
# Dependencies first, cached while only kudo's sources change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/render.rs && echo 'fn main() {}' > benches/sim.rs \
    && cargo build --release --locked --bin kudo \
    && rm -rf src benches target/release/deps/kudo* target/release/.fingerprint/kudo-*
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin kudo \
    && strip target/release/kudo \
    && ! ldd target/release/kudo 2>/dev/null | grep -q '=>'

# Stage 2: no shell, no libc, uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/kudo /usr/local/bin/kudo
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kudo"]
CMD ["serve", "--config", "/etc/kudo/kudo.yaml"]
