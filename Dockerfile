# cir model server / key broker image.
#   docker build -t cir .
#   docker run --rm cir --help
# The image runs as an unprivileged user, holds no model or key, and ships only the
# compiled JavaScript, the .proto files and production dependencies.

FROM node:20-bookworm-slim AS build
WORKDIR /src
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY attestation ./attestation
COPY common ./common
COPY kms-broker ./kms-broker
COPY server ./server
COPY client ./client
COPY cli ./cli
COPY bench ./bench
COPY proto ./proto
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
ENV NODE_ENV=production
# cir turns onnxruntime telemetry off in code (common/ort.ts); this covers any other process in the image.
ENV ORT_DISABLE_TELEMETRY=1
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/proto ./proto
USER node
EXPOSE 8443
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["--help"]
