# Multi-stage build: a static vncfleet binary on a minimal base, run as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/vncfleet/vncfleet/vnccloud.Version=${VERSION}" \
    -o /out/vncfleet ./cmd/vncfleet

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vncfleet /usr/local/bin/vncfleet
COPY configs/vncfleet.example.yaml /etc/vncfleet/vncfleet.example.yaml
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vncfleet"]
CMD ["serve"]
