package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's run command: a static mesh comes up and streams the answer.
func TestRunStreamsSampleAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"-max-tokens", "12"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	s := out.String()
	summary := regexp.MustCompile(`\[sim-small on 127\.0\.0\.1:\d+, FINISH_REASON_LENGTH\] \d+ prompt \+ 12 completion tokens`)
	if !summary.MatchString(s) || !strings.Contains(s, "router  127.0.0.1:") {
		t.Fatalf("unexpected output:\n%s", s)
	}
}
