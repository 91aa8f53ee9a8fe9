module github.com/llm-runner-router/llmrouter/services/engine-onnx

go 1.26.7

require github.com/llm-runner-router/llmrouter/pkg v0.0.0

require (
	github.com/yalue/onnxruntime_go v1.36.0
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/llm-runner-router/llmrouter/pkg => ../../pkg
