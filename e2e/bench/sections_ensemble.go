package bench

import (
	"cmp"
	"fmt"
	"runtime"
	"strings"
	"time"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// Ensemble measures routing.ensemble on engine-gguf workers: one model
// alone, then 2, 3 and 5 members under the first, vote and best-of
// combiners, timed end to end through the router.
func Ensemble(e *Env) (Section, error) {
	s := Section{Title: "Multi-Model Ensemble Performance", Status: Partly}
	gen := pick(e, 16, 64)
	reps := pick(e, 2, 4)
	// Five members over the three quantizations (two served twice, by
	// their own workers).
	kinds := []string{"F16", "Q8_0", "Q4_0", "Q8_0", "Q4_0"}
	var names []string
	var ws []*testkit.Proc
	defer func() {
		for _, w := range ws {
			w.Stop(5 * time.Second)
		}
	}()
	for i, q := range kinds {
		name := fmt.Sprintf("ens%d-%s", i+1, q)
		// One thread each: five members share this machine's cores, and
		// more threads than cores stall llama.cpp's spinning workers.
		ws = append(ws, e.ggufWorker(name, e.Models.GGUF[q], "-threads", "1", "-threads-batch", "1"))
		names = append(names, name)
	}
	for _, n := range names {
		if err := e.waitModel(e.Router, n, 1); err != nil {
			return s, err
		}
	}
	type row struct {
		size     int
		combiner string
	}
	rows := []row{{1, ""}}
	for _, k := range []int{2, 3, 5} {
		for _, c := range []string{"first", "vote", "best-of"} {
			rows = append(rows, row{k, c})
		}
	}
	combiner := map[string]routerv1.Combiner{"first": routerv1.Combiner_COMBINER_FIRST, "vote": routerv1.Combiner_COMBINER_VOTE, "best-of": routerv1.Combiner_COMBINER_BEST_OF}
	var out [][]string
	var single time.Duration
	for ri, r := range rows {
		var lat, ttft []time.Duration
		answer, engine := 0, 0
		var failed error
		for i := range reps + 1 {
			rq := TokenRequest(names[0], tokens(uint64(1000*ri+i), 50), gen)
			if r.size > 1 {
				rq.Routing = &routerv1.RoutingOptions{Ensemble: &routerv1.Ensemble{Models: names[:r.size], Combiner: combiner[r.combiner]}}
			}
			res := Stream(e.Ctx, e.Router.Client, rq)
			if res.Err != nil {
				failed = res.Err
				break
			}
			if i == 0 {
				continue // warm-up
			}
			lat, ttft = append(lat, res.E2E), append(ttft, res.TTFT)
			answer += res.Tokens
			engine += int(res.Usage.GetCompletionTokens())
		}
		label := "1 (" + names[0] + " alone)"
		if r.size > 1 {
			label = fmt.Sprintf("%d (%s)", r.size, strings.Join(kinds[:r.size], " + "))
		}
		if failed != nil {
			out = append(out, []string{label, cmp.Or(r.combiner, "—"), "failed: " + failed.Error(), "", "", "", "", "—"})
			continue
		}
		m := median(lat)
		if r.size == 1 {
			single = m
		}
		out = append(out, []string{label, cmp.Or(r.combiner, "—"), ms(m), ms(median(ttft)),
			f1(float64(answer) / sum(lat).Seconds()), fmt.Sprintf("%.1f×", float64(engine)/float64(max(answer, 1))),
			fmt.Sprintf("%.2f×", float64(m)/float64(single)), "—"})
	}
	s.Method = fmt.Sprintf("Model: %s, one engine-gguf worker per member (one thread each, all on this machine's %d cores), greedy, a "+
		"50-token prompt and %d generated tokens; median of %d after a warm-up. Members are the same model in different quantizations "+
		"(F16, Q8_0, Q4_0, then Q8_0 and Q4_0 again on their own workers): the members' answers differ only by quantization. "+
		"*Tokens/sec* is answer tokens over latency; *engine tokens* is the completion tokens every member generated per answer token "+
		"(the ensemble's cost).", e.describeModel(), runtime.NumCPU(), gen, reps)
	s.Table = table([]string{"members", "combiner", "latency", "TTFT", "tokens/sec", "engine tokens", "latency ÷ one model", "quality score"}, out)
	s.Notes = "*first* streams the member that produces a token first and cancels the rest: it answers in the fastest member's time " +
		"(here a smaller quantization beats F16 alone) and the cancelled members' work is only their prompts. *vote* and *best-of* wait " +
		"for the members (vote stops once a majority agrees), which on one machine share its cores, so their latency grows with the " +
		"members and every member's tokens are paid for. With more engine threads than cores (two each for five members on two cores) " +
		"llama.cpp's spinning threads starve one another and the router's stall guard cuts members, losing the vote's quorum. Progress events (gRPC) or SSE comments (HTTP) report members as they finish. The quality-score column is not " +
		"measured: it needs a labelled task set and models that differ in ability (the document does not say how its 8.7/10 was scored); " +
		"*judge* is not timed here, as the generated bench models cannot name an answer."
	return s, nil
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}
