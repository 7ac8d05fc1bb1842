# meshlet: Node 24 runs the TypeScript sources directly (type stripping), so the image is the sources plus the
# production dependencies. The `node` devDependency (the pinned runtime for development) is not installed: the
# image's own Node 24 runs meshlet.
#
#   docker build -t meshlet .
#   docker run --rm -v "$PWD/examples/quickstart:/manifests:ro" meshlet up -f /manifests --dns 0.0.0.0:5353 ...
FROM node:24-slim

# iproute2: --vip-mode interface adds and removes Service addresses with `ip address`; arping announces a
# LoadBalancer address at once when this node takes it over.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iputils-arping \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY . .

# Non-root by default. Privileged ports (53, 80) and interface mode need capabilities, which Docker grants to root
# only: the Compose example runs it as root with every capability but NET_ADMIN and NET_BIND_SERVICE dropped.
USER node
EXPOSE 53/udp 53/tcp 80 443 9901
ENTRYPOINT ["node", "bin/meshlet.ts"]
CMD ["up", "-f", "/manifests"]
