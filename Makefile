# make help lists the targets.
.PHONY: help build test vet fuzz bench demo
help: ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'
build: ## the vncfleet binary in bin/
	go build -o bin/vncfleet ./cmd/vncfleet
test: ## the test suite (the README's test command)
	go test -count=1 ./...
vet: ## gofmt and go vet
	test -z "$$(gofmt -l .)" && go vet ./...
fuzz: ## each fuzz target for 60 s
	for t in FuzzReader FuzzLimitReader FuzzValidateRaw; do go test -run '^$$' -fuzz "^$$t$$" -fuzztime 60s ./fleet/; done
	go test -run '^$$' -fuzz FuzzUploadBody -fuzztime 60s ./internal/server/
	for t in FuzzDecodeError FuzzDecodeListPage FuzzDecodeDetails FuzzNextLink; do go test -run '^$$' -fuzz "^$$t$$" -fuzztime 60s ./vnccloud/; done
	go test -run '^$$' -fuzz FuzzDecodeResponse -fuzztime 60s ./zenlayer/
	go test -run '^$$' -fuzz FuzzOpen -fuzztime 60s ./internal/secretbox/
bench: ## the benchmarks of the issues (prints figures)
	go run ./bench ingest --rows 1000000
	go run ./bench throughput --devices 20000
	go run ./bench calls --devices 2000
	go run ./bench rotation --devices 10000 --rate 500
demo: ## the main job on embedded defaults
	go run ./cmd/vncfleet demo
