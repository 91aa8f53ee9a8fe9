package enginehost

import (
	"context"
	"sync"

	"github.com/llm-runner-router/llmrouter/pkg/rpcerr"
)

// TokenQueue hands one sequence's tokens from the goroutine that decodes
// them to the one that streams them. Push and End never block the decoder.
type TokenQueue struct {
	mu     sync.Mutex
	queue  []Token
	err    error
	ended  bool
	notify chan struct{}
}

// NewTokenQueue returns an empty queue.
func NewTokenQueue() *TokenQueue { return &TokenQueue{notify: make(chan struct{}, 1)} }

// Push appends a token.
func (q *TokenQueue) Push(t Token) {
	q.mu.Lock()
	q.queue = append(q.queue, t)
	q.mu.Unlock()
	q.wake()
}

// End closes the queue: no more tokens come. A nil err ends it normally
// (after an end-of-generation token or a cancellation); the first error
// given is kept.
func (q *TokenQueue) End(err error) {
	q.mu.Lock()
	q.ended = true
	if err != nil && q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
	q.wake()
}

func (q *TokenQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Next returns the next token, blocking until one arrives, the queue ends
// (its error, or Unavailable when it ended without one) or ctx ends.
func (q *TokenQueue) Next(ctx context.Context) (Token, error) {
	for {
		q.mu.Lock()
		if len(q.queue) > 0 {
			t := q.queue[0]
			q.queue = q.queue[1:]
			q.mu.Unlock()
			return t, nil
		}
		err, ended := q.err, q.ended
		q.mu.Unlock()
		if err != nil {
			return Token{}, err
		}
		if ended {
			return Token{}, rpcerr.Unavailable("sequence ended")
		}
		select {
		case <-ctx.Done():
			return Token{}, ctx.Err()
		case <-q.notify:
		}
	}
}
