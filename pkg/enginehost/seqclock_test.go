package enginehost

import (
	"testing"
	"time"
)

func TestSeqClock(t *testing.T) {
	c := NewSeqClock()
	if st := (*SeqClock)(nil).Stats(); st != (SeqStats{}) {
		t.Fatalf("nil clock: %+v", st)
	}
	(*SeqClock)(nil).Admit(1) // records nothing, does not panic
	if st := c.Stats(); st != (SeqStats{}) {
		t.Fatalf("before admission: %+v", st)
	}
	time.Sleep(2 * time.Millisecond)
	c.Admit(7)
	c.Batch(3)
	c.Batch(2)
	time.Sleep(2 * time.Millisecond)
	c.Token()
	first := c.Stats()
	time.Sleep(2 * time.Millisecond)
	c.Token() // later tokens do not move the end of the prefill
	st := c.Stats()
	if st.QueueWait < 2*time.Millisecond || st.Prefill < 2*time.Millisecond || st.Prefill != first.Prefill ||
		st.PrefillTokens != 7 || st.BatchMax != 3 {
		t.Fatalf("%+v (first token: %+v)", st, first)
	}
}
