package app

import (
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/llm-runner-router/llmrouter/pkg/sim"
)

func TestParseModels(t *testing.T) {
	tests := []struct {
		in      string
		want    []sim.ModelConfig
		wantErr string
	}{
		{"a", []sim.ModelConfig{{Name: "a", Quality: 0.5}}, ""},
		{"a:ctx=2048;quality=0.9;cost_in=0.1;cost_out=0.2;output_tokens=7, b", []sim.ModelConfig{
			{Name: "a", ContextLength: 2048, Quality: 0.9, CostPer1KInput: 0.1, CostPer1KOutput: 0.2, OutputTokens: 7},
			{Name: "b", Quality: 0.5},
		}, ""},
		{"", nil, "names no model"},
		{"a:ctx", nil, "is not key=value"},
		{"a:ctx=-1", nil, "not a non-negative number"},
		{"a:color=1", nil, `unknown option "color"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseModels(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestValidateRejectsBadDelays(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-ttft-sigma", "-1"}, "-ttft-sigma must be within 0..4"},
		{[]string{"-ttft-sigma", "5"}, "-ttft-sigma must be within 0..4"},
		{[]string{"-ttft-per-active", "-1ms"}, "-ttft-per-active not negative"},
	} {
		fs := flag.NewFlagSet("engine-sim", flag.ContinueOnError)
		var o Options
		o.AddFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}
