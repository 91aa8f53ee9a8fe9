package server_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/discovery"
	"github.com/llm-runner-router/llmrouter/pkg/sim"
	"github.com/llm-runner-router/llmrouter/services/router/internal/cache"
	"github.com/llm-runner-router/llmrouter/services/router/internal/server"
)

// ensembleWorker serves models answering with length tokens each (the sim's
// greedy text is the same for every model, so answers differ only by their
// length), after ttft.
func ensembleWorker(t *testing.T, ttft time.Duration, length int, models ...string) *worker {
	var ms []sim.ModelConfig
	for _, m := range models {
		ms = append(ms, sim.ModelConfig{Name: m, Quality: 0.5, CostPer1KOutput: 1, OutputTokens: length})
	}
	cfg := simCfg(ms...)
	cfg.TTFT = ttft
	return startWorker(t, cfg)
}

func ensembleReq(c routerv1.Combiner, models ...string) *routerv1.GenerateRequest {
	r := req("ignored", 10)
	r.Routing = &routerv1.RoutingOptions{Ensemble: &routerv1.Ensemble{Models: models, Combiner: c}}
	return r
}

// runEvents is run that also collects progress events.
func runEvents(ctx context.Context, c routerv1.RouterServiceClient, r *routerv1.GenerateRequest) (result, []*routerv1.EnsembleProgress, error) {
	var res result
	var progress []*routerv1.EnsembleProgress
	s, err := c.Generate(ctx, r)
	if err != nil {
		return res, nil, err
	}
	for {
		msg, err := s.Recv()
		if err == io.EOF {
			return res, progress, nil
		}
		if err != nil {
			return res, progress, err
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Progress:
			if res.start != nil {
				return res, progress, status.Error(codes.Internal, "progress after the answer started")
			}
			progress = append(progress, e.Progress)
		case *routerv1.GenerateResponse_Start:
			res.start = e.Start
		case *routerv1.GenerateResponse_Delta:
			res.tokens += len(e.Delta.GetTokenIds())
			res.text += e.Delta.GetText()
			if len(e.Delta.GetLogprobs()) > 0 && !r.GetSampling().GetLogprobs() {
				return res, progress, status.Error(codes.Internal, "logprobs the client did not ask for")
			}
		case *routerv1.GenerateResponse_End:
			res.end = e.End
		}
	}
}

// lpEp is ep for models that advertise logprobs (the sim's do).
func lpEp(addr string, models ...string) discovery.Endpoint {
	e := ep(addr, models...)
	for _, m := range e.Models {
		m.Capabilities = &enginev1.Capabilities{Logprobs: true}
	}
	return e
}

func outcomes(end *genv1.EndEvent) []string {
	var out []string
	for _, m := range end.GetEnsemble().GetMembers() {
		out = append(out, m.GetModel()+"="+m.GetOutcome())
	}
	return out
}

func TestEnsembleFirstStreamsTheFastestAndCancelsTheRest(t *testing.T) {
	fast, slow := ensembleWorker(t, 5*time.Millisecond, 6, "a"), ensembleWorker(t, 3*time.Second, 6, "b")
	m := startRouter(t, ep(fast.addr, "a"), ep(slow.addr, "b"))
	began := time.Now()
	r, progress, err := runEvents(context.Background(), m.client, ensembleReq(routerv1.Combiner_COMBINER_FIRST, "b", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("took %v: the slow member was waited for", took)
	}
	e := r.end.GetEnsemble()
	if len(progress) != 0 || r.start.GetModel() != "a" || r.tokens != 6 || e.GetCombiner() != "first" || e.GetWinner() != 1 ||
		strings.Join(outcomes(r.end), ",") != "b=cancelled,a=won" {
		t.Fatalf("start %v, %d tokens, %d progress events, ensemble %v", r.start, r.tokens, len(progress), e)
	}
	if r.end.GetUsage().GetCompletionTokens() != 6 || r.end.GetCostUsd() != e.GetMembers()[1].GetCostUsd() || e.GetMembers()[0].GetCostUsd() != 0 {
		t.Fatalf("usage %v, cost %v, members %v", r.end.GetUsage(), r.end.GetCostUsd(), e.GetMembers())
	}
	deadline := time.Now().Add(3 * time.Second)
	for slow.backend.Status().GetActiveSequences() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled member still runs")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := metric(t, m, `llmrouter_ensembles_total{combiner="first",result="ok"}`); got != 1 {
		t.Fatalf("llmrouter_ensembles_total = %v", got)
	}
}

func TestEnsembleVoteDecidesOnAMajority(t *testing.T) {
	same := ensembleWorker(t, 5*time.Millisecond, 6, "a", "b", "x")
	slow := ensembleWorker(t, 3*time.Second, 3, "d", "e")
	m := startRouter(t, ep(same.addr, "a", "b", "x"), ep(slow.addr, "d", "e"))
	began := time.Now()
	// a, b and x agree: three of five is a majority, so d and e are
	// cancelled without being waited for.
	r, progress, err := runEvents(context.Background(), m.client, ensembleReq(routerv1.Combiner_COMBINER_VOTE, "d", "a", "b", "e", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > time.Second {
		t.Fatalf("took %v: the vote waited for members that could not change it", took)
	}
	e := r.end.GetEnsemble()
	// The answer sent is that of the first member to give it.
	want := []string{"d=cancelled", "a=lost", "b=lost", "e=cancelled", "x=lost"}
	if len(progress) == 3 {
		want[progress[0].GetMember()] = progress[0].GetModel() + "=won"
	}
	if got := strings.Join(outcomes(r.end), ","); got != strings.Join(want, ",") || e.GetMembers()[e.GetWinner()].GetVotes() != 3 || len(progress) != 3 {
		t.Fatalf("outcomes %s, ensemble %v, progress %v", got, e, progress)
	}
	deadline := time.Now().Add(3 * time.Second)
	for slow.backend.Status().GetActiveSequences() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled members still run")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEnsembleVotePicksTheCommonAnswer(t *testing.T) {
	// c answers well before a and b, so its vote is in before their
	// majority decides (and would cancel it).
	same := ensembleWorker(t, 150*time.Millisecond, 6, "a", "b")
	other := ensembleWorker(t, 5*time.Millisecond, 3, "c")
	m := startRouter(t, ep(same.addr, "a", "b"), ep(other.addr, "c"))
	rq := ensembleReq(routerv1.Combiner_COMBINER_VOTE, "c", "a", "b")
	rq.RequestId = "vote-1"
	r, progress, err := runEvents(context.Background(), m.client, rq)
	if err != nil {
		t.Fatal(err)
	}
	if r.start.GetRequestId() != "vote-1" {
		t.Fatalf("start event's request id %q, want the request's", r.start.GetRequestId())
	}
	e := r.end.GetEnsemble()
	if r.tokens != 6 || e.GetMembers()[e.GetWinner()].GetModel() == "c" || e.GetMembers()[1].GetVotes() != 2 || e.GetMembers()[0].GetVotes() != 1 ||
		!strings.Contains(e.GetDecision(), "2 of 3") {
		t.Fatalf("%d tokens, ensemble %v", r.tokens, e)
	}
	if len(progress) < 2 || progress[len(progress)-1].GetMembers() != 3 {
		t.Fatalf("progress %v", progress)
	}
	// Usage sums every member that answered: 6 + 6 + 3 completion tokens.
	if got := r.end.GetUsage().GetCompletionTokens(); got != 15 {
		t.Fatalf("completion tokens %d, want 15 (every member)", got)
	}
}

func TestEnsembleBestOfPicksTheHighestMeanLogprob(t *testing.T) {
	long := ensembleWorker(t, 5*time.Millisecond, 6, "a")
	short := ensembleWorker(t, 5*time.Millisecond, 3, "c")
	m := startRouter(t, lpEp(long.addr, "a"), lpEp(short.addr, "c"))
	// The sim's token log-probabilities run -0.1, -0.2, ... -0.5, -0.1:
	// the 3-token answer's mean (-0.2) beats the 6-token one's (-0.27).
	r, _, err := runEvents(context.Background(), m.client, ensembleReq(routerv1.Combiner_COMBINER_BEST_OF, "a", "c"))
	if err != nil {
		t.Fatal(err)
	}
	e := r.end.GetEnsemble()
	if e.GetWinner() != 1 || r.tokens != 3 || e.GetMembers()[1].GetMeanLogprob() > -0.19 || e.GetMembers()[1].GetMeanLogprob() < -0.21 {
		t.Fatalf("%d tokens, ensemble %v", r.tokens, e)
	}
}

func TestEnsembleJudgeThatNamesNoAnswer(t *testing.T) {
	w := ensembleWorker(t, 5*time.Millisecond, 4, "a", "b", "judge")
	m := startRouter(t, ep(w.addr, "a", "b", "judge"))
	rq := ensembleReq(routerv1.Combiner_COMBINER_JUDGE, "a", "b")
	rq.Routing.Ensemble.JudgeModel = "judge"
	r, progress, err := runEvents(context.Background(), m.client, rq)
	if err != nil {
		t.Fatal(err)
	}
	e := r.end.GetEnsemble()
	// The sim's judge answers with words, not a number: the first answer
	// is sent, and the decision says why.
	if e.GetJudge().GetModel() != "judge" || e.GetJudge().GetUsage().GetCompletionTokens() != 4 || !strings.Contains(e.GetDecision(), "named no answer") {
		t.Fatalf("ensemble %v", e)
	}
	if got := r.end.GetUsage().GetCompletionTokens(); got != 12 {
		t.Fatalf("completion tokens %d, want 12 (two members and the judge)", got)
	}
	if p := progress[len(progress)-1]; p.GetState() != "judging" || p.GetMember() != -1 || p.GetModel() != "judge" {
		t.Fatalf("progress %v", progress)
	}
}

func TestEnsembleQuorum(t *testing.T) {
	w := ensembleWorker(t, 5*time.Millisecond, 4, "a")
	m := startRouter(t, lpEp(w.addr, "a"))
	// One member of two answers: enough for best-of's default quorum.
	r, _, err := runEvents(context.Background(), m.client, ensembleReq(routerv1.Combiner_COMBINER_BEST_OF, "a", "nowhere"))
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(r.end); strings.Join(got, ",") != "a=won,nowhere=failed" || !strings.Contains(r.end.GetEnsemble().GetMembers()[1].GetError(), "NotFound") {
		t.Fatalf("outcomes %v, members %v", got, r.end.GetEnsemble().GetMembers())
	}
	// Not enough for a vote's majority of two.
	_, _, err = runEvents(context.Background(), m.client, ensembleReq(routerv1.Combiner_COMBINER_VOTE, "a", "nowhere"))
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "fewer than its quorum of 2") || !strings.Contains(status.Convert(err).Message(), "nowhere") {
		t.Fatalf("vote without a quorum: %v", err)
	}
	// A judge no worker serves is refused before any member runs.
	judged := ensembleReq(routerv1.Combiner_COMBINER_JUDGE, "a", "a")
	judged.Routing.Ensemble.JudgeModel = "nowhere"
	before := w.backend.Started()
	if _, _, err := runEvents(context.Background(), m.client, judged); status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "judge_model") {
		t.Fatalf("unserved judge: %v", err)
	}
	if w.backend.Started() != before {
		t.Fatal("the members ran for a judge that cannot answer")
	}
	// Every member failing alike keeps their code.
	_, _, err = runEvents(context.Background(), m.client, ensembleReq(routerv1.Combiner_COMBINER_FIRST, "nowhere", "nor-here"))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("no member served: %v", err)
	}
}

func TestEnsembleBadRequests(t *testing.T) {
	w := ensembleWorker(t, 5*time.Millisecond, 4, "a")
	m := startRouterCfg(t, server.Config{MaxAttempts: 3, Cache: server.CacheConfig{Store: cache.NewMemory(1 << 20)}}, ep(w.addr, "a"))
	nine := ensembleReq(routerv1.Combiner_COMBINER_FIRST, "a", "a", "a", "a", "a", "a", "a", "a", "a")
	unknown := ensembleReq(routerv1.Combiner(9), "a", "a")
	unset := ensembleReq(routerv1.Combiner_COMBINER_UNSPECIFIED, "a", "a")
	noJudge := ensembleReq(routerv1.Combiner_COMBINER_JUDGE, "a", "a")
	judgeless := ensembleReq(routerv1.Combiner_COMBINER_VOTE, "a", "a")
	judgeless.Routing.Ensemble.JudgeModel = "a"
	fallbacks := ensembleReq(routerv1.Combiner_COMBINER_VOTE, "a", "a")
	fallbacks.Routing.FallbackModels = []string{"a"}
	quorum := ensembleReq(routerv1.Combiner_COMBINER_VOTE, "a", "a")
	quorum.Routing.Ensemble.Quorum = 3
	firstQuorum := ensembleReq(routerv1.Combiner_COMBINER_FIRST, "a", "a")
	firstQuorum.Routing.Ensemble.Quorum = 2
	cached := ensembleReq(routerv1.Combiner_COMBINER_VOTE, "a", "a")
	cached.Routing.Cache = &routerv1.CacheOptions{Mode: routerv1.CacheMode_CACHE_MODE_REFRESH}
	for name, c := range map[string]struct {
		r    *routerv1.GenerateRequest
		want string
	}{
		"nine members":         {nine, "has 9 models: an ensemble takes 2 to 8"},
		"unknown combiner":     {unknown, "combiner 9 is unknown"},
		"no combiner":          {unset, "combiner is required"},
		"judge without model":  {noJudge, "judge_model is required"},
		"judge model on vote":  {judgeless, "only for the judge combiner"},
		"with fallback models": {fallbacks, "cannot be combined with routing.ensemble"},
		"quorum over members":  {quorum, "quorum 3 is out of range"},
		"with cache options":   {cached, "on an ensemble, whose answer is never cached"},
		"quorum on first":      {firstQuorum, "its quorum is 1"},
	} {
		_, _, err := runEvents(context.Background(), m.client, c.r)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), c.want) {
			t.Errorf("%s: %v, want InvalidArgument containing %q", name, err, c.want)
		}
	}
}
