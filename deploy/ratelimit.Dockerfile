# envoyproxy/ratelimit (a static binary on distroless) copied onto busybox, so that compose's
# healthcheck has wget to read its /healthcheck (deploy/docker-compose.yaml).
ARG RATELIMIT_IMAGE=envoyproxy/ratelimit:3fb70258
FROM ${RATELIMIT_IMAGE} AS ratelimit

FROM busybox:1.37.0-musl
COPY --from=ratelimit /bin/ratelimit /bin/ratelimit
USER 65532:65532
ENTRYPOINT ["/bin/ratelimit"]
