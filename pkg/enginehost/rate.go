package enginehost

import (
	"sync"
	"time"
)

// RateMeter counts events per second over the last full one-second window,
// for GetStatus's tokens per second. Safe for concurrent use.
type RateMeter struct {
	mu     sync.Mutex
	window int64 // unix second being counted
	count  float64
	last   float64 // count of the previous second
}

// Add counts n events now.
func (m *RateMeter) Add(n float64) {
	now := time.Now().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roll(now)
	m.count += n
}

func (m *RateMeter) roll(now int64) {
	if now == m.window {
		return
	}
	if now == m.window+1 {
		m.last = m.count
	} else {
		m.last = 0
	}
	m.window, m.count = now, 0
}

// PerSecond is the count of the last full second.
func (m *RateMeter) PerSecond() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roll(time.Now().Unix())
	return m.last
}
