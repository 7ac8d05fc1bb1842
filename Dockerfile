# meshlet: Node 24 runs the TypeScript sources directly (type stripping), so the image is the sources plus the
# production dependencies. The `node` devDependency (the pinned runtime for development) is not installed: the
# image's own Node 24 runs meshlet.
#
#   docker build -t meshlet .
#   docker run --rm -v "$PWD/examples/quickstart:/manifests:ro" meshlet up -f /manifests --dns 0.0.0.0:5353 ...
#
# Behind a TLS-inspecting proxy, npm needs its CA: pass the PEM text as the build argument NPM_CA, e.g.
#   docker build --build-arg NPM_CA="$(cat "$NODE_EXTRA_CA_CERTS")" -t meshlet .
# It is used only in the "deps" stage below, which is thrown away: it is in neither the image nor its history.
# (A build argument, not a BuildKit secret, so that the legacy builder of docker-compose 1.29 builds this file too.)

FROM node:24-slim AS deps
ARG NPM_CA=""
WORKDIR /app
COPY package.json package-lock.json ./
RUN if [ -n "$NPM_CA" ]; then printf '%s\n' "$NPM_CA" > /tmp/npm-ca.pem; export NODE_EXTRA_CA_CERTS=/tmp/npm-ca.pem; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf /tmp/npm-ca.pem /root/.npm

FROM node:24-slim
# iproute2: --vip-mode interface adds and removes Service addresses with `ip address`. arping: a gratuitous ARP when
# this node takes over a LoadBalancer address from another (L2 failover); optional, and it needs CAP_NET_RAW, which
# the single-node Compose example does not grant (meshlet then logs one warning and carries on). openssl: the
# self-signed default certificate of the https listener. nftables and conntrack: the default --l4-mode auto picks the
# kernel's L4 data plane when `nft` works (CAP_NET_ADMIN), programmed with `nft -i`; `conntrack -D` clears the NATed
# flows of a UDP endpoint that leaves. Without CAP_NET_ADMIN meshlet falls back to the userspace plane.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iputils-arping openssl nftables conntrack \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY . .

# Non-root by default. Privileged ports (53, 80) and interface mode need capabilities, which Docker grants to root
# only: the Compose example runs it as root with every capability but NET_ADMIN and NET_BIND_SERVICE dropped.
USER node
EXPOSE 53/udp 53/tcp 80 443 9901
# Ready means every listener meshlet wants is up, Service addresses included (/readyz names what is not).
HEALTHCHECK --interval=5s --timeout=2s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9901/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/meshlet.ts"]
CMD ["up", "-f", "/manifests"]
