package openai

import (
	"context"
	"net/http"

	"google.golang.org/grpc/metadata"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

// PurgeHandler serves POST /admin/cache/purge: a JSON body {"key_name":
// ..., "model": ...} (both optional, "" matching all) answered with
// {"purged": N}. The Authorization header travels to purge as metadata, so
// the router's admin check is the gRPC RPC's; its errors are OpenAI-style.
func PurgeHandler(purge func(context.Context, *routerv1.PurgeCacheRequest) (*routerv1.PurgeCacheResponse, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			KeyName string `json:"key_name"`
			Model   string `json:"model"`
		}
		if r.ContentLength != 0 && !decodeStrict(w, r, &body) {
			return
		}
		ctx := r.Context()
		if a := r.Header.Get("Authorization"); a != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", a))
		}
		resp, err := purge(ctx, &routerv1.PurgeCacheRequest{KeyName: body.KeyName, Model: body.Model})
		if err != nil {
			writeStatus(w, err)
			return
		}
		writeJSON(w, map[string]int64{"purged": resp.GetPurged()})
	})
}
