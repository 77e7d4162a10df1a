# The celerity image: a Rust build stage running scripts/image/build (the
# same script scripts/test runs natively), then a slim Debian runtime with
# libmariadb3 and a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/image/build /out release && strip /out/celerity

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin celerity
COPY --from=build /out/celerity /usr/local/bin/celerity
USER celerity
ENV CELERITY_HTTP_ADDR=0.0.0.0:9540 \
    CELERITY_LOG_FORMAT=json
EXPOSE 9540
# SIGTERM: the worker stops taking deliveries, finishes what runs within
# --shutdown-grace and hands the rest back unacked.
STOPSIGNAL SIGTERM
ENTRYPOINT ["celerity"]
CMD ["worker"]
