package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's run command: a static mesh of llama.cpp workers (or, with
// -sim, simulators) comes up and streams the answer.
func TestRunStreamsSampleAnswer(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		model string
	}{
		{[]string{"-max-tokens", "12"}, "kjv-bigram"},
		{[]string{"-max-tokens", "12", "-sim"}, "sim-small"},
	} {
		t.Run(tc.model, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out bytes.Buffer
			if err := run(ctx, tc.args, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			s := out.String()
			summary := regexp.MustCompile(`\[` + tc.model + ` on 127\.0\.0\.1:\d+, FINISH_REASON_(LENGTH|STOP)\] \d+ prompt \+ \d+ completion tokens`)
			if !summary.MatchString(s) || !strings.Contains(s, "router  127.0.0.1:") {
				t.Fatalf("unexpected output:\n%s", s)
			}
		})
	}
}
