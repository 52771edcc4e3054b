# Multi-stage build: compile with cgo against libzmq, run on a slim image
# with only the libzmq runtime, as a non-root user.
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libzmq3-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version `switchyard --version` prints and registrations carry:
# docker build --build-arg VERSION=$(git describe --always --dirty) .
# (without the argument, git describe of the copied tree, else "dev").
ARG VERSION=
RUN v="${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}" \
	&& go build -trimpath -ldflags "-s -w -X main.version=$v" -o /out/switchyard ./cmd/switchyard \
	&& /out/switchyard --version

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libzmq5 ca-certificates && rm -rf /var/lib/apt/lists/* \
	&& useradd --system --create-home --home-dir /var/lib/switchyard --uid 10001 switchyard
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
EXPOSE 8080 8081 55001 55002
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["--help"]
