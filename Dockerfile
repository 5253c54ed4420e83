# Multi-stage: build on Debian 12 with libvirt headers, run on a slim Debian 12 with only
# the libvirt client library. The runtime talks to the host's libvirtd through its socket:
#   docker run -p 9443:9443 -v /var/run/libvirt:/var/run/libvirt -v virtdeck-data:/var/lib/virtdeck virtdeck
FROM rust:1-bookworm AS build
RUN echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t bookworm-backports libvirt-dev libssl-dev pkg-config npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/vendor-assets.sh && cargo build --release --locked && strip target/release/virtdeck

FROM debian:bookworm-slim
RUN echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends -t bookworm-backports libvirt0 libssl3 ca-certificates genisoimage \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/virtdeck /usr/local/bin/virtdeck
VOLUME /var/lib/virtdeck
EXPOSE 9443
ENV VIRTDECK_DATA_DIR=/var/lib/virtdeck
ENTRYPOINT ["/usr/local/bin/virtdeck"]
CMD ["serve"]
