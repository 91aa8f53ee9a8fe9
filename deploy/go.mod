// Deployment artefacts: the OCI images (make images) and the checks of the
// Kubernetes manifests. Built with GOWORK=off and kept out of go.work, so
// the Kubernetes and image libraries never move the services' dependencies.
module github.com/llm-runner-router/llmrouter/deploy

go 1.26.7

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
