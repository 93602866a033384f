# The plinth binary in a minimal image, for deploy/kubernetes.
#   docker build -t plinth:latest .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Pure Go (SQLite runs as WebAssembly), so the binary is static.
RUN CGO_ENABLED=0 go build -trimpath -o /out/plinth ./cmd/plinth

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/plinth /plinth
ENTRYPOINT ["/plinth"]
