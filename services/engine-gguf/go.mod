module github.com/llm-runner-router/llmrouter/services/engine-gguf

go 1.26.7

require github.com/llm-runner-router/llmrouter/pkg v0.0.0

replace github.com/llm-runner-router/llmrouter/pkg => ../../pkg
