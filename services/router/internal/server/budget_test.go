package server

import (
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0.2, 0.1, func() time.Time { return now }) // floor: 1 retry per 10 s window
	for range 10 {
		b.request()
	}
	// 0.2 × 10 + 1 = 3 retries.
	for i := range 3 {
		if !b.retry() {
			t.Fatalf("retry %d refused within budget", i)
		}
	}
	if b.retry() {
		t.Fatal("retry beyond the budget allowed")
	}
	now = now.Add(11 * time.Second) // a new window
	if !b.retry() {
		t.Fatal("budget not renewed")
	}
}
