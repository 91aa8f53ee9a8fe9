package server

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	generationv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/enginehost"
	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
	"github.com/llm-runner-router/llmrouter/services/router/internal/scheduling"
)

// maxMembers bounds an ensemble's models.
const maxMembers = 8

// combinerNames are the combiners' names in end events and messages.
var combinerNames = map[routerv1.Combiner]string{
	routerv1.Combiner_COMBINER_FIRST: "first", routerv1.Combiner_COMBINER_VOTE: "vote",
	routerv1.Combiner_COMBINER_BEST_OF: "best-of", routerv1.Combiner_COMBINER_JUDGE: "judge",
}

// validateEnsemble checks routing.ensemble.
func validateEnsemble(req *routerv1.GenerateRequest) error {
	e := req.GetRouting().GetEnsemble()
	if e == nil {
		return nil
	}
	n := len(e.GetModels())
	judge := e.GetCombiner() == routerv1.Combiner_COMBINER_JUDGE
	switch {
	case n < 2 || n > maxMembers:
		return rpcerr.InvalidArgument("routing.ensemble.models has %d models: an ensemble takes 2 to %d", n, maxMembers)
	case e.GetCombiner() == routerv1.Combiner_COMBINER_UNSPECIFIED:
		return rpcerr.InvalidArgument("routing.ensemble.combiner is required: first, vote, best-of or judge")
	case combinerNames[e.GetCombiner()] == "":
		return rpcerr.InvalidArgument("routing.ensemble.combiner %d is unknown (known: first, vote, best-of, judge)", e.GetCombiner())
	case judge && e.GetJudgeModel() == "":
		return rpcerr.InvalidArgument("routing.ensemble.judge_model is required with the judge combiner")
	case !judge && e.GetJudgeModel() != "":
		return rpcerr.InvalidArgument("routing.ensemble.judge_model is only for the judge combiner, not %s", combinerNames[e.GetCombiner()])
	case e.GetCombiner() == routerv1.Combiner_COMBINER_FIRST && e.GetQuorum() > 1:
		return rpcerr.InvalidArgument("routing.ensemble.quorum %d: the first combiner sends one member's answer, so its quorum is 1", e.GetQuorum())
	case e.GetQuorum() < 0 || int(e.GetQuorum()) > n:
		return rpcerr.InvalidArgument("routing.ensemble.quorum %d is out of range: 0 (the default) to the %d models", e.GetQuorum(), n)
	case len(req.GetRouting().GetFallbackModels()) > 0:
		return rpcerr.InvalidArgument("routing.fallback_models cannot be combined with routing.ensemble: a failed member is covered by the others (and quorum)")
	}
	for i, m := range e.GetModels() {
		if err := enginehost.ValidateModelName(m); err != nil {
			return rpcerr.InvalidArgument("routing.ensemble.models[%d]: %v", i, err)
		}
	}
	if judge {
		if err := enginehost.ValidateModelName(e.GetJudgeModel()); err != nil {
			return rpcerr.InvalidArgument("routing.ensemble.judge_model: %v", err)
		}
	}
	return nil
}

// member is one model's run within an ensemble.
type member struct {
	i     int
	model string
	req   *routerv1.GenerateRequest
	// Filled as its stream arrives (by its own goroutine), read by the
	// coordinator once it returned.
	events []*routerv1.GenerateResponse
	start  *generationv1.StartEvent
	end    *generationv1.EndEvent
	text   strings.Builder
	lpSum  float64
	lpN    int
	// Set by the coordinator (under ensemble.mu for the first combiner).
	err       error
	done      bool
	cancelled bool
	order     int // finishing order, from 1
	cancel    context.CancelFunc
}

// answered reports whether the member finished its answer.
func (m *member) answered() bool { return m.done && m.err == nil && m.end != nil }

func (m *member) keep(msg *routerv1.GenerateResponse) {
	switch e := msg.GetEvent().(type) {
	case *routerv1.GenerateResponse_Start:
		m.start = e.Start
	case *routerv1.GenerateResponse_Delta:
		m.text.WriteString(e.Delta.GetText())
		for _, lp := range e.Delta.GetLogprobs() {
			m.lpSum += float64(lp.GetChosen().GetLogprob())
			m.lpN++
		}
	case *routerv1.GenerateResponse_End:
		m.end = e.End
	}
}

// buffer keeps a member's events until the combiner decides.
type buffer struct{ m *member }

func (b buffer) Send(msg *routerv1.GenerateResponse) error {
	c := proto.CloneOf(msg)
	b.m.events = append(b.m.events, c)
	b.m.keep(c)
	return nil
}

// errOutrun ends a member of a first-combiner ensemble that another member
// beat to its first token.
var errOutrun = status.Error(codes.Unavailable, "another member of the ensemble answered first")

// ensemble is one ensemble request.
type ensemble struct {
	s        *Server
	req      *routerv1.GenerateRequest
	cfg      *routerv1.Ensemble
	profile  *scheduling.Profile
	out      Sink
	combiner string
	members  []*member
	quorum   int
	// id is the request's id, which the client sees (members run as id.N).
	id string

	mu       sync.Mutex
	winner   *member
	finished int
}

// runEnsemble serves a request with routing.ensemble.
func (s *Server) runEnsemble(ctx context.Context, profile *scheduling.Profile, req *routerv1.GenerateRequest, out Sink) error {
	cfg := req.GetRouting().GetEnsemble()
	if _, err := s.authorize(ctx, append(cfg.GetModels(), cfg.GetJudgeModel())...); err != nil {
		return err
	}
	if j := cfg.GetJudgeModel(); j != "" && !s.servesAny(s.sched.Resolve(j)) {
		// Before the members run (and are paid for).
		return rpcerr.NotFound("routing.ensemble.judge_model: no worker serves model %s (routable models: %s)", j, strings.Join(s.routableNames(), ", "))
	}
	e := &ensemble{s: s, req: req, cfg: cfg, profile: profile, out: out, combiner: combinerNames[cfg.GetCombiner()], quorum: int(cfg.GetQuorum())}
	if e.quorum == 0 {
		e.quorum = 1
		if cfg.GetCombiner() == routerv1.Combiner_COMBINER_VOTE {
			e.quorum = len(cfg.GetModels())/2 + 1
		}
	}
	id := req.GetRequestId()
	if id == "" {
		id = enginehost.NewRequestID()
	}
	e.id = id
	for i, name := range cfg.GetModels() {
		mreq := proto.CloneOf(req)
		mreq.Model = name
		mreq.Routing.Ensemble = nil
		mreq.RequestId = fmt.Sprintf("%.120s.%d", id, i)
		if cfg.GetCombiner() == routerv1.Combiner_COMBINER_BEST_OF {
			if mreq.Sampling == nil {
				mreq.Sampling = &generationv1.SamplingParams{}
			}
			mreq.Sampling.Logprobs = true
		}
		e.members = append(e.members, &member{i: i, model: name, req: mreq})
	}
	run, result := e.wait, "ok"
	if cfg.GetCombiner() == routerv1.Combiner_COMBINER_FIRST {
		run = e.first
	}
	err := run(ctx)
	if err != nil {
		result = "failed"
	}
	s.cfg.Metrics.Ensemble(e.combiner, result)
	return err
}

// servesAny reports whether a worker serves any of models.
func (s *Server) servesAny(models []string) bool {
	for _, m := range models {
		if s.pool.Serves(m) {
			return true
		}
	}
	return false
}

// run runs member m to its end with sink out.
func (e *ensemble) run(ctx context.Context, m *member, out Sink) error {
	return e.s.run(ctx, e.profile, m.req, nil, nil, e.s.relayTo(out, m.req))
}

// racer is a first-combiner member's sink: the first member to send an
// event streams to the client, the others are stopped.
type racer struct {
	e *ensemble
	m *member
}

func (r racer) Send(msg *routerv1.GenerateResponse) error {
	e := r.e
	e.mu.Lock()
	if e.winner == nil {
		e.winner = r.m
		for _, o := range e.members {
			if o != r.m && !o.done {
				o.cancelled = true
				o.cancel()
			}
		}
	}
	won := e.winner == r.m
	e.mu.Unlock()
	if !won {
		return errOutrun
	}
	r.m.keep(msg)
	msg = e.asked(msg)
	if end := msg.GetEnd(); end != nil {
		e.mu.Lock()
		msg = &routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_End{End: e.endEvent(r.m, end, "the first member to answer")}}
		e.mu.Unlock()
	}
	return e.out.Send(msg)
}

// first runs the members at once; the first to produce a token streams.
func (e *ensemble) first(ctx context.Context) error {
	var wg sync.WaitGroup
	e.mu.Lock()
	for _, m := range e.members {
		mctx, cancel := context.WithCancel(ctx)
		m.cancel = cancel
		wg.Go(func() {
			defer cancel()
			err := e.run(mctx, m, racer{e, m})
			e.mu.Lock()
			e.finished++
			m.err, m.done, m.order = err, true, e.finished
			e.mu.Unlock()
		})
	}
	e.mu.Unlock()
	wg.Wait()
	if e.winner != nil {
		return e.winner.err
	}
	return e.quorumLost(ctx)
}

// wait runs the members at once, reports each as it finishes, and once the
// combiner can decide cancels the rest and sends the chosen answer.
func (e *ensemble) wait(ctx context.Context) error {
	done := make(chan *member, len(e.members))
	var wg sync.WaitGroup
	for _, m := range e.members {
		mctx, cancel := context.WithCancel(ctx)
		m.cancel = cancel
		wg.Go(func() {
			defer cancel()
			m.err = e.run(mctx, m, buffer{m})
			done <- m
		})
	}
	defer wg.Wait()
	decided := false
	for range e.members {
		m := <-done
		e.finished++
		m.done, m.order = true, e.finished
		if m.cancelled {
			continue
		}
		state := "answered"
		if !m.answered() {
			state = "failed"
		}
		if err := e.progress(m, state); err != nil {
			e.cancelRest()
			return err
		}
		if !decided && e.combiner == "vote" && e.majority() != nil {
			decided = true
			e.cancelRest() // the others cannot change the outcome
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var answered []*member
	for _, m := range e.members {
		if m.answered() {
			answered = append(answered, m)
		}
	}
	if len(answered) < e.quorum {
		return e.quorumLost(ctx)
	}
	var (
		w        *member
		decision string
		judge    *member
	)
	switch e.combiner {
	case "vote":
		w, decision = e.vote(answered)
	case "best-of":
		w, decision = bestOf(answered)
	case "judge":
		var err error
		if w, decision, judge, err = e.judge(ctx, answered); err != nil {
			return err
		}
	}
	e.winner = w
	for _, msg := range w.events {
		if d := msg.GetDelta(); d != nil && !e.req.GetSampling().GetLogprobs() {
			d.Logprobs = nil // asked for scoring only
		}
		if end := msg.GetEnd(); end != nil {
			msg = &routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_End{End: e.endEvent(w, end, decision)}}
			if judge != nil {
				msg.GetEnd().Ensemble.Judge = e.memberProto(judge, "won")
				addUsage(msg.GetEnd(), judge.end)
			}
		}
		if err := e.out.Send(e.asked(msg)); err != nil {
			return err
		}
	}
	return nil
}

// asked is a member's start event with the request's own id.
func (e *ensemble) asked(msg *routerv1.GenerateResponse) *routerv1.GenerateResponse {
	if st := msg.GetStart(); st != nil {
		st = proto.CloneOf(st)
		st.RequestId = e.id
		return &routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Start{Start: st}}
	}
	return msg
}

// cancelRest stops the members still running.
func (e *ensemble) cancelRest() {
	for _, m := range e.members {
		if !m.done {
			m.cancelled = true
			m.cancel()
		}
	}
}

func (e *ensemble) progress(m *member, state string) error {
	return e.out.Send(&routerv1.GenerateResponse{Event: &routerv1.GenerateResponse_Progress{Progress: &routerv1.EnsembleProgress{
		Member: int32(m.i), Model: m.model, State: state, Finished: int32(e.finished), Members: int32(len(e.members)),
	}}})
}

// quorumLost is the error of an ensemble too few members answered: the
// members' own status when they all failed alike, else Unavailable.
func (e *ensemble) quorumLost(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []string
	var first error
	same := true
	answered := 0
	for _, m := range e.members {
		if m.answered() || m.err == nil {
			answered++
			continue
		}
		if first == nil {
			first = m.err
		} else if rpcerr.Code(m.err) != rpcerr.Code(first) {
			same = false
		}
		errs = append(errs, fmt.Sprintf("%s: %s", m.model, message(m.err)))
	}
	msg := fmt.Sprintf("ensemble (%s) of %d models: %d answered, fewer than its quorum of %d; %s",
		e.combiner, len(e.members), answered, e.quorum, strings.Join(errs, "; "))
	if first != nil && same && answered == 0 {
		return restatus(first, "%s", msg)
	}
	return rpcerr.Unavailable("%s", msg)
}

// normalise is an answer as votes compare it.
func normalise(s string) string {
	s = strings.Join(strings.Fields(strings.ToLower(s)), " ")
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsPunct(r) || unicode.IsSpace(r) })
}

// majority is the member whose answer more than half of all members gave,
// if any answered so.
func (e *ensemble) majority() *member {
	counts := map[string]int{}
	for _, m := range e.members {
		if m.answered() {
			k := normalise(m.text.String())
			if counts[k]++; counts[k] > len(e.members)/2 {
				return m
			}
		}
	}
	return nil
}

// vote picks the answer most members gave; a tie goes to the answer given
// first.
func (e *ensemble) vote(answered []*member) (*member, string) {
	// In finishing order, so the member kept for each answer is the first
	// to give it, and a tie goes to the answer given first.
	byOrder := slices.SortedFunc(slices.Values(answered), func(a, b *member) int { return a.order - b.order })
	counts := map[string]int{}
	for _, m := range byOrder {
		counts[normalise(m.text.String())]++
	}
	w := byOrder[0]
	for _, m := range byOrder[1:] {
		if counts[normalise(m.text.String())] > counts[normalise(w.text.String())] {
			w = m
		}
	}
	return w, fmt.Sprintf("%d of %d members gave this answer", counts[normalise(w.text.String())], len(e.members))
}

func (m *member) meanLogprob() float64 {
	if m.lpN == 0 {
		return math.Inf(-1)
	}
	return m.lpSum / float64(m.lpN)
}

// bestOf picks the answer with the highest mean token log-probability.
func bestOf(answered []*member) (*member, string) {
	w := answered[0]
	for _, m := range answered[1:] {
		if m.meanLogprob() > w.meanLogprob() {
			w = m
		}
	}
	if w.lpN == 0 {
		return w, "no member returned log-probabilities: the first member's answer"
	}
	return w, fmt.Sprintf("the highest mean token log-probability (%.3f over %d tokens)", w.meanLogprob(), w.lpN)
}

// judge asks the judge model which answer is best.
func (e *ensemble) judge(ctx context.Context, answered []*member) (*member, string, *member, error) {
	if err := e.progress(&member{i: -1, model: e.cfg.GetJudgeModel()}, "judging"); err != nil {
		return nil, "", nil, err
	}
	var b strings.Builder
	b.WriteString("Question:\n" + question(e.req.GetPrompt()) + "\n\n")
	for i, m := range answered {
		fmt.Fprintf(&b, "Answer %d:\n%s\n\n", i+1, m.text.String())
	}
	fmt.Fprintf(&b, "Which answer is best? Reply with its number (1 to %d) only.", len(answered))
	jreq := &routerv1.GenerateRequest{
		Model: e.cfg.GetJudgeModel(), RequestId: e.members[0].req.GetRequestId() + ".judge", User: e.req.GetUser(),
		Prompt: &generationv1.Prompt{Kind: &generationv1.Prompt_Chat{Chat: &generationv1.ChatMessages{Messages: []*generationv1.ChatMessage{
			{Role: generationv1.Role_ROLE_SYSTEM, Content: "You compare candidate answers to a question and name the best one."},
			{Role: generationv1.Role_ROLE_USER, Content: b.String()},
		}}}},
		Sampling: &generationv1.SamplingParams{Temperature: proto.Float32(0), MaxTokens: 8},
		Routing:  &routerv1.RoutingOptions{Strategy: e.req.GetRouting().GetStrategy()},
	}
	j := &member{i: -1, model: e.cfg.GetJudgeModel(), req: jreq}
	if j.err = e.run(ctx, j, buffer{j}); j.err != nil {
		return nil, "", nil, restatus(j.err, "ensemble judge %s failed: %s", j.model, message(j.err))
	}
	j.done = true
	said := j.text.String()
	if k, ok := firstNumber(said); ok && k >= 1 && k <= len(answered) {
		return answered[k-1], fmt.Sprintf("the judge %s chose answer %d of %d", j.model, k, len(answered)), j, nil
	}
	return answered[0], fmt.Sprintf("the judge %s named no answer (it said %q): the first answer", j.model, truncate(said, 40)), j, nil
}

// question is the prompt's last user turn, or its text.
func question(p *generationv1.Prompt) string {
	if c := p.GetChat(); c != nil {
		msgs := c.GetMessages()
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].GetRole() == generationv1.Role_ROLE_USER {
				return msgs[i].GetContent()
			}
		}
	}
	return p.GetText()
}

func firstNumber(s string) (int, bool) {
	i := strings.IndexFunc(s, unicode.IsDigit)
	if i < 0 {
		return 0, false
	}
	j := i
	for j < len(s) && j-i < 3 && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(s[i:j])
	return n, err == nil
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// endEvent is the winner's end event with the ensemble's usage and cost
// (every member's) and how the answer was chosen.
func (e *ensemble) endEvent(w *member, end *generationv1.EndEvent, decision string) *generationv1.EndEvent {
	out := proto.CloneOf(end)
	res := &generationv1.EnsembleResult{Combiner: e.combiner, Winner: int32(w.i), Decision: decision}
	out.Usage, out.CostUsd = &generationv1.Usage{}, 0
	for _, m := range e.members {
		outcome := "failed"
		switch {
		case m == w:
			outcome = "won"
			m.end = end
		case m.answered():
			outcome = "lost"
		case m.cancelled:
			outcome = "cancelled"
		}
		res.Members = append(res.Members, e.memberProto(m, outcome))
		if m == w || outcome == "lost" {
			addUsage(out, m.end)
		}
	}
	out.Ensemble = res
	return out
}

func (e *ensemble) memberProto(m *member, outcome string) *generationv1.EnsembleMember {
	p := &generationv1.EnsembleMember{Model: m.model, Outcome: outcome}
	if m.start != nil {
		p.RoutedModel, p.Endpoint = m.start.GetModel(), m.start.GetEndpoint()
	}
	if m.end != nil && outcome != "cancelled" && outcome != "failed" {
		p.Usage, p.CostUsd = m.end.GetUsage(), m.end.GetCostUsd()
	}
	if m.err != nil && outcome == "failed" {
		st := status.Convert(rpcerr.ToStatus(m.err))
		p.Error = st.Code().String() + ": " + st.Message()
	}
	if m.lpN > 0 {
		p.MeanLogprob = m.meanLogprob()
	}
	if e.combiner == "vote" && m.answered() {
		for _, o := range e.members {
			if o.answered() && normalise(o.text.String()) == normalise(m.text.String()) {
				p.Votes++
			}
		}
	}
	return p
}

// addUsage adds a member's usage and cost to the ensemble's end event.
func addUsage(out, end *generationv1.EndEvent) {
	if end == nil {
		return
	}
	u := end.GetUsage()
	out.Usage.PromptTokens += u.GetPromptTokens()
	out.Usage.CompletionTokens += u.GetCompletionTokens()
	out.Usage.CachedPromptTokens += u.GetCachedPromptTokens()
	out.Usage.TotalTokens += u.GetTotalTokens()
	out.CostUsd += end.GetCostUsd()
}
