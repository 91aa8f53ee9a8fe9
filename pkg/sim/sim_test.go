package sim

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestFirstTokenDelayIsLogNormalAroundTTFT(t *testing.T) {
	b := New(Config{TTFT: 100 * time.Millisecond, TTFTSigma: 1})
	const n = 20000
	logs := make([]float64, n)
	for i := range logs {
		logs[i] = math.Log(float64(b.firstTokenDelay(0)) / float64(100*time.Millisecond))
	}
	slices.Sort(logs)
	mean, sq := 0.0, 0.0
	for _, v := range logs {
		mean += v / n
	}
	for _, v := range logs {
		sq += (v - mean) * (v - mean) / n
	}
	// ln(delay/TTFT) is standard normal: median 0, deviation σ = 1.
	if med := logs[n/2]; math.Abs(med) > 0.05 || math.Abs(math.Sqrt(sq)-1) > 0.05 {
		t.Fatalf("ln(delay/ttft): median %.3f, deviation %.3f; want 0 and 1", med, math.Sqrt(sq))
	}
}

func TestFirstTokenDelayGrowsWithLoad(t *testing.T) {
	b := New(Config{TTFT: 10 * time.Millisecond, TTFTPerActive: 30 * time.Millisecond})
	if got := b.firstTokenDelay(0); got != 10*time.Millisecond {
		t.Fatalf("idle: %v", got)
	}
	if got := b.firstTokenDelay(3); got != 100*time.Millisecond {
		t.Fatalf("three running: %v, want 100ms", got)
	}
}
