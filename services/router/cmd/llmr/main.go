// Command llmr is LLM Runner Router's command-line client: chat with a
// model through the router, list its models and its endpoints (a live
// table of load, health and time to first token), and lay out a request's
// trace, read back from Jaeger, as a terminal waterfall.
//
//	llmr chat [-model M] [-strategy S] [-system TEXT] [MESSAGE ...]
//	llmr models
//	llmr endpoints [-watch] [-interval 1s]
//	llmr trace [-jaeger URL] REQUEST_ID
//
// Every subcommand takes -addr (default $LLMROUTER_ADDR: the router's
// -listen address), -api-key (default $LLMROUTER_API_KEY), the services'
// TLS flags -tls-cert, -tls-key and -tls-ca (all three for a router run
// with -client-tls mtls, -tls-ca alone for -client-tls tls, none for
// plaintext), -json (one JSON document for scripts) and -color (auto: on a
// terminal, unless NO_COLOR is set). Flags come before the subcommand's
// arguments.
//
// chat without a message on a terminal is interactive: each line is a
// turn of one conversation (/reset starts another, /exit or Ctrl-D ends);
// otherwise it sends the message (or standard input) once and streams the
// answer. Its last line (on standard error when output is not a terminal)
// names the model, endpoint, tokens, time to first token and the request
// id that llmr trace takes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	enginev1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/engine/v1"
	genv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/generation/v1"
	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
	"github.com/llm-runner-router/llmrouter/pkg/mtls"
	"github.com/llm-runner-router/llmrouter/pkg/traces"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

const usage = `usage: llmr <command> [flags] [arguments]

commands:
  chat [MESSAGE ...]    chat with a model (interactive on a terminal without a message)
  models                the models the router serves
  endpoints             the workers behind it: load, health, time to first token (-watch: live)
  trace REQUEST_ID      a request's trace from Jaeger, as a waterfall

llmr <command> -h lists the command's flags.
`

// run is the command; it returns the exit status (2 for usage errors).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmds := map[string]func(context.Context, *common, []string) error{
		"chat": chat, "models": models, "endpoints": endpoints, "trace": trace,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "llmr: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	c := &common{name: args[0], getenv: getenv}
	c.fs = flag.NewFlagSet("llmr "+args[0], flag.ContinueOnError)
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.addr, "addr", getenv("LLMROUTER_ADDR"), "the router's gRPC address, host:port (default $LLMROUTER_ADDR)")
	// (Not a flag default: -h would print the key.)
	c.fs.StringVar(&c.apiKey, "api-key", "", "API key, sent as a bearer token (default $LLMROUTER_API_KEY)")
	c.tls.AddFlags(c.fs)
	c.fs.BoolVar(&c.json, "json", false, "print one JSON document (for scripts) instead of text")
	colorMode := c.fs.String("color", "auto", "colour: auto (on a terminal, unless NO_COLOR), always or never")
	c.in, c.out, c.errOut = stdin, stdout, stderr
	c.setup = func() error {
		con, err := newConsole(stdin, stdout, stderr, *colorMode, getenv)
		c.con = con
		return err
	}
	if err := cmd(ctx, c, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "llmr %s: %v\n", args[0], err)
			return 2
		}
		if ctx.Err() != nil {
			return 130
		}
		fmt.Fprintf(stderr, "llmr %s: %s\n", args[0], describe(err))
		return 1
	}
	return 0
}

// usageError is a mistake in the command line.
type usageError struct{ error }

// describe says what went wrong: a gRPC status as its code and message.
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// common is what every subcommand shares: flags, output, the connection.
type common struct {
	name   string
	fs     *flag.FlagSet
	addr   string
	apiKey string
	tls    mtls.Flags
	json   bool
	getenv func(string) string
	in     io.Reader
	out    io.Writer
	errOut io.Writer
	setup  func() error
	con    *console
}

// parse parses the flags (registered by the subcommand first) and sets up
// the console.
func (c *common) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if c.apiKey == "" {
		c.apiKey = c.getenv("LLMROUTER_API_KEY")
	}
	if err := c.setup(); err != nil {
		return usageError{err}
	}
	return nil
}

// dial connects to the router with the TLS flags, the API key on every
// call.
func (c *common) dial() (routerv1.RouterServiceClient, func(), error) {
	if c.addr == "" {
		return nil, nil, usageError{errors.New("no router address: set -addr or LLMROUTER_ADDR (the router's -listen address)")}
	}
	cfg, err := mtls.DialConfig(c.tls, mtls.Identity(mtls.RoleRouter))
	if err != nil {
		return nil, nil, usageError{err}
	}
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.apiKey != "" {
		key := c.apiKey
		opts = append(opts,
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), method, req, reply, cc, o...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), desc, cc, method, o...)
			}))
	}
	conn, err := grpc.NewClient(c.addr, opts...)
	if err != nil {
		return nil, nil, usageError{err}
	}
	return routerv1.NewRouterServiceClient(conn), func() { conn.Close() }, nil
}

func (c *common) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// answer is one streamed answer, as chat -json prints it.
type answer struct {
	RequestID    string  `json:"request_id"`
	Model        string  `json:"model"`
	Endpoint     string  `json:"endpoint"`
	Text         string  `json:"text"`
	FinishReason string  `json:"finish_reason"`
	PromptTokens int32   `json:"prompt_tokens"`
	OutputTokens int32   `json:"completion_tokens"`
	TTFTMs       float64 `json:"ttft_ms"`
	TokensPerSec float64 `json:"tokens_per_second"`
	CostUSD      float64 `json:"cost_usd"`
	Failovers    int32   `json:"failovers"`
}

func chat(ctx context.Context, c *common, args []string) error {
	model := c.fs.String("model", c.getenv("LLMROUTER_MODEL"), "model or alias to ask (default $LLMROUTER_MODEL)")
	strategy := c.fs.String("strategy", "", "routing strategy (the router's default when empty)")
	fallbacks := c.fs.String("fallback", "", "comma-separated fallback models")
	system := c.fs.String("system", "", "system prompt")
	maxTokens := c.fs.Int("max-tokens", 256, "most tokens to generate")
	temperature := c.fs.Float64("temperature", -1, "sampling temperature (default: the model's)")
	seed := c.fs.Int64("seed", -1, "sampling seed (default: random)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *model == "" {
		return usageError{errors.New("no model: set -model or LLMROUTER_MODEL (llmr models lists them)")}
	}
	client, closeConn, err := c.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	req := &routerv1.GenerateRequest{Model: *model, Sampling: &genv1.SamplingParams{MaxTokens: int32(*maxTokens)},
		Routing: &routerv1.RoutingOptions{Strategy: *strategy}}
	if *fallbacks != "" {
		req.Routing.FallbackModels = strings.Split(*fallbacks, ",")
	}
	if *temperature >= 0 {
		req.Sampling.Temperature = new(float32(*temperature))
	}
	if *seed >= 0 {
		req.Sampling.Seed = new(uint64(*seed))
	}
	var history []*genv1.ChatMessage
	if *system != "" {
		history = append(history, &genv1.ChatMessage{Role: genv1.Role_ROLE_SYSTEM, Content: *system})
	}
	message := strings.Join(c.fs.Args(), " ")
	if message == "" && !c.con.inTTY {
		b, err := io.ReadAll(c.in)
		if err != nil {
			return err
		}
		message = strings.TrimSpace(string(b))
		if message == "" {
			return usageError{errors.New("no message: give one as arguments or on standard input")}
		}
	}
	if message != "" {
		_, err := c.turn(ctx, client, req, append(history, &genv1.ChatMessage{Role: genv1.Role_ROLE_USER, Content: message}))
		return err
	}
	if c.json {
		return usageError{errors.New("-json needs a message (interactive chat prints text)")}
	}
	c.note(fmt.Sprintf("chatting with %s through %s; /reset starts over, /exit or Ctrl-D ends", *model, c.addr))
	lines := bufio.NewScanner(c.in)
	lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for {
		fmt.Fprint(c.out, c.con.paint(bold+";"+cyan, "you> "))
		if !lines.Scan() {
			fmt.Fprintln(c.out)
			return lines.Err()
		}
		line := strings.TrimSpace(lines.Text())
		switch line {
		case "":
			continue
		case "/exit", "/quit":
			return nil
		case "/reset":
			history = history[:min(len(history), boolToInt(*system != ""))]
			fmt.Fprintln(c.out, c.con.paint(dim, "(a new conversation)"))
			continue
		}
		turn := append(history, &genv1.ChatMessage{Role: genv1.Role_ROLE_USER, Content: line})
		a, err := c.turn(ctx, client, req, turn)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			fmt.Fprintln(c.out, c.con.paint(red, describe(err)))
			continue
		}
		history = append(turn, &genv1.ChatMessage{Role: genv1.Role_ROLE_ASSISTANT, Content: a.Text})
	}
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// turn sends the conversation and streams the answer (or, with -json,
// prints it whole at the end).
func (c *common) turn(ctx context.Context, client routerv1.RouterServiceClient, req *routerv1.GenerateRequest, msgs []*genv1.ChatMessage) (answer, error) {
	r := proto.CloneOf(req)
	r.Prompt = &genv1.Prompt{Kind: &genv1.Prompt_Chat{Chat: &genv1.ChatMessages{Messages: msgs}}}
	stream, err := client.Generate(ctx, r)
	if err != nil {
		return answer{}, err
	}
	var a answer
	var text strings.Builder
	w := &wrapper{out: c.out}
	if c.con.tty {
		w.width = c.con.width
	}
	started := false
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if started && !c.json {
				w.end()
			}
			return a, err
		}
		switch e := msg.GetEvent().(type) {
		case *routerv1.GenerateResponse_Start:
			a.RequestID, a.Model, a.Endpoint = e.Start.GetRequestId(), e.Start.GetModel(), e.Start.GetEndpoint()
			a.PromptTokens = e.Start.GetPromptTokens()
			started = true
		case *routerv1.GenerateResponse_Delta:
			text.WriteString(e.Delta.GetText())
			if !c.json {
				w.write(e.Delta.GetText())
			}
		case *routerv1.GenerateResponse_End:
			end := e.End
			if m := end.GetModels(); len(m) > 0 {
				a.Model = m[len(m)-1]
			}
			if at := end.GetAttempts(); len(at) > 0 {
				a.Endpoint = at[len(at)-1].GetEndpoint()
			}
			a.FinishReason = strings.ToLower(strings.TrimPrefix(end.GetFinishReason().String(), "FINISH_REASON_"))
			a.PromptTokens, a.OutputTokens = end.GetUsage().GetPromptTokens(), end.GetUsage().GetCompletionTokens()
			a.TTFTMs = float64(end.GetTimings().GetTimeToFirstToken().AsDuration().Microseconds()) / 1000
			a.TokensPerSec, a.CostUSD, a.Failovers = end.GetTimings().GetTokensPerSecond(), end.GetCostUsd(), end.GetFailovers()
		}
	}
	a.Text = text.String()
	if c.json {
		return a, c.printJSON(a)
	}
	w.end()
	status := fmt.Sprintf("[%s on %s · %s · %d+%d tokens · TTFT %.0f ms · %.1f tok/s · request %s]",
		a.Model, a.Endpoint, a.FinishReason, a.PromptTokens, a.OutputTokens, a.TTFTMs, a.TokensPerSec, a.RequestID)
	if a.Failovers > 0 {
		status = strings.TrimSuffix(status, "]") + fmt.Sprintf(" · %d failovers]", a.Failovers)
	}
	if c.con.tty {
		// Wrapped, not clipped: the request id is what llmr trace takes.
		c.note(status)
	} else {
		fmt.Fprintln(c.errOut, status)
	}
	return a, nil
}

// note writes s dimmed, word-wrapped at the console's width.
func (c *common) note(s string) {
	var b strings.Builder
	w := &wrapper{out: &b, width: c.con.width}
	w.write(s)
	w.end()
	for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		fmt.Fprintln(c.out, c.con.paint(dim, line))
	}
}

// capabilities lists what a model can do beyond text.
func capabilities(m *enginev1.ModelInfo) []string {
	cp := m.GetCapabilities()
	var out []string
	for _, f := range []struct {
		name string
		on   bool
	}{{"structured", cp.GetStructuredOutput()}, {"any-schema", cp.GetAnyJsonSchema()}, {"tools", cp.GetTools()},
		{"logprobs", cp.GetLogprobs()}, {"images", cp.GetImages()}, {"prefill", m.GetAcceptsPrefill()}} {
		if f.on {
			out = append(out, f.name)
		}
	}
	return out
}

func models(ctx context.Context, c *common, args []string) error {
	if err := c.parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", c.fs.Args())}
	}
	client, closeConn, err := c.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := client.ListModels(ctx, &routerv1.ListModelsRequest{})
	if err != nil {
		return err
	}
	type model struct {
		Name          string   `json:"name"`
		Format        string   `json:"format"`
		ContextLength int32    `json:"context_length"`
		Endpoints     []string `json:"endpoints"`
		Quality       float64  `json:"quality"`
		CostPer1KIn   float64  `json:"cost_per_1k_input"`
		CostPer1KOut  float64  `json:"cost_per_1k_output"`
		Capabilities  []string `json:"capabilities"`
	}
	var list []model
	for _, m := range resp.GetModels() {
		i := m.GetInfo()
		list = append(list, model{i.GetName(), i.GetFormat(), i.GetContextLength(), m.GetEndpoints(), i.GetQuality(),
			i.GetCostPer_1KInput(), i.GetCostPer_1KOutput(), capabilities(i)})
	}
	if c.json {
		if list == nil {
			list = []model{}
		}
		return c.printJSON(map[string]any{"models": list})
	}
	rows := make([][]string, len(list))
	for i, m := range list {
		rows[i] = []string{m.Name, m.Format, strconv.Itoa(int(m.ContextLength)), strconv.Itoa(len(m.Endpoints)), fmt.Sprintf("%.2f", m.Quality),
			fmt.Sprintf("%.4f", m.CostPer1KIn), fmt.Sprintf("%.4f", m.CostPer1KOut), strings.Join(m.Capabilities, ",")}
	}
	c.con.table([]column{{header: "MODEL"}, {header: "FORMAT"}, {header: "CONTEXT", right: true}, {header: "ENDPOINTS", right: true},
		{header: "QUALITY", right: true}, {header: "$/1K IN", right: true}, {header: "$/1K OUT", right: true}, {header: "CAPABILITIES"}}, rows)
	return nil
}

// endpointRow is one worker, as endpoints -json prints it.
type endpointRow struct {
	ID        string   `json:"id"`
	Address   string   `json:"address"`
	Healthy   bool     `json:"healthy"`
	InFlight  int32    `json:"in_flight"`
	Failures  int32    `json:"consecutive_failures"`
	TTFTMs    *float64 `json:"ttft_ms"` // null until observed
	ModelList []string `json:"models"`
}

func endpoints(ctx context.Context, c *common, args []string) error {
	watch := c.fs.Bool("watch", false, "refresh the table every -interval until interrupted")
	interval := c.fs.Duration("interval", time.Second, "refresh interval with -watch")
	if err := c.parse(args); err != nil {
		return err
	}
	if *interval <= 0 {
		return usageError{fmt.Errorf("-interval must be positive, got %v", *interval)}
	}
	client, closeConn, err := c.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	for {
		resp, err := client.ListEndpoints(ctx, &routerv1.ListEndpointsRequest{})
		if err != nil {
			return err
		}
		rows := []endpointRow{}
		for _, e := range resp.GetEndpoints() {
			r := endpointRow{ID: e.GetId(), Address: e.GetAddress(), Healthy: e.GetHealthy(), InFlight: e.GetInFlight(), Failures: e.GetConsecutiveFailures(), ModelList: []string{}}
			if d := e.GetTtftEwma(); d != nil {
				ms := float64(d.AsDuration().Microseconds()) / 1000
				r.TTFTMs = &ms
			}
			for _, m := range e.GetModels() {
				r.ModelList = append(r.ModelList, m.GetName())
			}
			rows = append(rows, r)
		}
		switch {
		case c.json && *watch:
			b, _ := json.Marshal(map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "endpoints": rows})
			fmt.Fprintln(c.out, string(b))
		case c.json:
			return c.printJSON(map[string]any{"endpoints": rows})
		default:
			if *watch && c.con.tty {
				fmt.Fprint(c.out, "\x1b[H\x1b[2J") // redraw in place
			}
			if *watch {
				fmt.Fprintln(c.out, c.con.paint(dim, clip(fmt.Sprintf("%s · %s · every %v, Ctrl-C stops", c.addr, time.Now().Format("15:04:05"), *interval), c.con.width)))
			}
			c.endpointTable(rows)
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
		if !c.json && !c.con.tty {
			fmt.Fprintln(c.out)
		}
	}
}

func (c *common) endpointTable(rows []endpointRow) {
	cells := make([][]string, len(rows))
	for i, r := range rows {
		health, ttft := "down", "-"
		if r.Healthy {
			health = "up"
		}
		if r.TTFTMs != nil {
			ttft = fmt.Sprintf("%.0f ms", *r.TTFTMs)
		}
		cells[i] = []string{r.Address, health, strconv.Itoa(int(r.InFlight)), strconv.Itoa(int(r.Failures)), ttft, strings.Join(r.ModelList, ",")}
	}
	c.con.table([]column{
		{header: "ENDPOINT"},
		{header: "HEALTH", style: func(s string) string {
			if s == "up" {
				return green
			}
			return red
		}},
		{header: "LOAD", right: true},
		{header: "FAILS", right: true, style: func(s string) string {
			if s != "0" {
				return yellow
			}
			return ""
		}},
		{header: "TTFT", right: true},
		{header: "MODELS"},
	}, cells)
}

func trace(ctx context.Context, c *common, args []string) error {
	base := c.getenv("LLMROUTER_JAEGER")
	if base == "" {
		base = "http://127.0.0.1:16686"
	}
	jaeger := c.fs.String("jaeger", base, "Jaeger query API (default $LLMROUTER_JAEGER or http://127.0.0.1:16686)")
	wait := c.fs.Duration("wait", 10*time.Second, "how long to wait for the trace to arrive (exporters batch spans)")
	if err := c.parse(args); err != nil {
		return err
	}
	if c.fs.NArg() != 1 {
		return usageError{errors.New("want one REQUEST_ID (chat prints it)")}
	}
	id := c.fs.Arg(0)
	jc := &traces.Client{Base: strings.TrimSuffix(*jaeger, "/"), HTTP: &http.Client{Timeout: 10 * time.Second}}
	deadline := time.Now().Add(*wait)
	var tr traces.Trace
	for {
		found, err := jc.Find(ctx, traces.Query{Service: "router", Tags: map[string]string{"llm.request_id": id},
			Start: time.Now().Add(-48 * time.Hour), End: time.Now().Add(time.Minute), Limit: 5})
		if err != nil {
			return fmt.Errorf("jaeger at %s: %w", *jaeger, err)
		}
		if len(found) > 0 {
			tr = found[0]
			// The workers' spans may still be on their way (exporters
			// batch): wait for one, or show what came by the deadline.
			if slices.ContainsFunc(tr.Spans, func(s traces.Span) bool { return s.Service != "router" }) || time.Now().After(deadline) {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no trace with llm.request_id %s in Jaeger at %s (within %v)", id, *jaeger, *wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	nodes := traces.Tree(tr)
	t0 := nodes[0].Start
	end := t0
	for _, n := range nodes {
		t0 = minTime(t0, n.Start)
		if n.End().After(end) {
			end = n.End()
		}
	}
	total := end.Sub(t0)
	if c.json {
		type span struct {
			Service    string         `json:"service"`
			Operation  string         `json:"operation"`
			Kind       string         `json:"kind"`
			Depth      int            `json:"depth"`
			StartMs    float64        `json:"start_ms"`
			DurationMs float64        `json:"duration_ms"`
			Tags       map[string]any `json:"tags"`
		}
		out := struct {
			TraceID   string  `json:"trace_id"`
			RequestID string  `json:"request_id"`
			TotalMs   float64 `json:"total_ms"`
			Spans     []span  `json:"spans"`
		}{TraceID: tr.ID, RequestID: id, TotalMs: ms(total)}
		for _, n := range nodes {
			out.Spans = append(out.Spans, span{n.Service, n.Operation, n.Kind, n.Depth, ms(n.Start.Sub(t0)), ms(n.Duration), n.Tags})
		}
		return c.printJSON(out)
	}
	c.waterfall(tr.ID, id, nodes, t0, total)
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// waterfall draws each span as a bar on a shared time axis: the name
// column on the left, the bar in the rest of the width (lighter up to the
// first token where the span reports it), the duration on the right, and
// the span's hop attributes dimmed on the next line.
func (c *common) waterfall(traceID, requestID string, nodes []traces.Node, t0 time.Time, total time.Duration) {
	w := c.con.width
	fmt.Fprintln(c.out, c.con.paint(bold, clip(fmt.Sprintf("trace %s · request %s · %.1f ms · %d spans", traceID, requestID, ms(total), len(nodes)), w)))
	// name, space, bar, space, 11 for the duration: within w down to a
	// few columns (the bar goes first, then the name shrinks).
	nameW := min(max(w/2, 16), 48, max(w-14, 4))
	barW := max(w-nameW-13, 1)
	fill, light := "#", "-"
	if c.con.tty {
		fill, light = "█", "░"
	}
	colors := map[string]string{"router": blue, "engine-gguf": green, "engine-onnx": green, "engine-sim": green, "provider-proxy": yellow}
	for _, n := range nodes {
		op := n.Operation
		if i := strings.LastIndex(op, "."); i >= 0 && strings.Contains(op, "/") {
			op = op[i+1:] // llmrouter.router.v1.RouterService/Generate -> RouterService/Generate
		}
		name := clip(strings.Repeat(" ", n.Depth)+n.Service+" "+op, nameW)
		start, length := 0, 1
		if total > 0 {
			start = int(float64(barW) * float64(n.Start.Sub(t0)) / float64(total))
			length = max(1, int(float64(barW)*float64(n.Duration)/float64(total)+0.5))
		}
		start = min(start, barW-1)
		length = min(length, barW-start)
		// A span that reports its time to first token shows the wait for
		// it (queue and prefill) lighter than the decoding after it.
		wait := 0
		if ttft := n.Ms("llm.ttft_ms"); ttft > 0 && n.Duration > 0 {
			wait = min(length-1, int(float64(length)*float64(ttft)/float64(n.Duration)+0.5))
		}
		bar := strings.Repeat(" ", start) + c.con.paint(colors[n.Service], strings.Repeat(light, max(wait, 0))+strings.Repeat(fill, length-max(wait, 0))) +
			strings.Repeat(" ", barW-start-length)
		fmt.Fprintf(c.out, "%s %s %9.2fms\n", pad(name, nameW), bar, ms(n.Duration))
		if tags := strings.TrimSpace(traces.HopTags(n.Span)); tags != "" {
			fmt.Fprintln(c.out, c.con.paint(dim, clip(strings.Repeat(" ", n.Depth+2)+tags, w)))
		}
	}
}
