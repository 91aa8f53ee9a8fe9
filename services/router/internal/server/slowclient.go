package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"

	routerv1 "github.com/llm-runner-router/llmrouter/pkg/api/llmrouter/router/v1"
)

// ErrSlowClient ends a stream whose client stopped reading: one message
// could not be written within the write timeout.
var ErrSlowClient = errors.New("the client stopped reading the stream (a write blocked past the write timeout)")

type cancelKey struct{}

// CancelableStreams is the gRPC server option that lets the router end a
// stream whose client stopped reading. grpc-go blocks a Send on flow
// control until the stream's context ends, and only the transport can end
// it; the tap handle makes each stream's context one the router can cancel.
func CancelableStreams() grpc.ServerOption {
	return grpc.InTapHandle(func(ctx context.Context, _ *tap.Info) (context.Context, error) {
		ctx, cancel := context.WithCancelCause(ctx)
		return context.WithValue(ctx, cancelKey{}, cancel), nil
	})
}

// writeWatch is a Sink that cancels its stream when one Send blocks longer
// than timeout, so a stuck client frees its worker sequence and its
// goroutine. One timer per stream, re-armed per message.
type writeWatch struct {
	out     rawSink
	timeout time.Duration
	timer   *time.Timer
	// sendStart is the start of the Send in progress (unix ns), 0 between
	// sends.
	sendStart atomic.Int64
}

// rawSink is a gRPC server stream: messages, or raw frames.
type rawSink interface {
	Sink
	SendMsg(any) error
}

// watchWrites wraps out when its context was made by CancelableStreams.
func watchWrites(ctx context.Context, out rawSink, timeout time.Duration) (Sink, func()) {
	cancel, ok := ctx.Value(cancelKey{}).(context.CancelCauseFunc)
	if !ok || timeout <= 0 {
		return out, func() {}
	}
	w := &writeWatch{out: out, timeout: timeout}
	w.timer = time.AfterFunc(time.Hour, func() {
		// A timer that fired for an earlier Send finds none in progress,
		// or one that started less than timeout ago.
		if s := w.sendStart.Load(); s != 0 && time.Since(time.Unix(0, s)) >= w.timeout {
			cancel(ErrSlowClient)
		}
	})
	w.timer.Stop()
	return w, func() { w.timer.Stop() }
}

func (w *writeWatch) Send(m *routerv1.GenerateResponse) error {
	w.sendStart.Store(time.Now().UnixNano())
	w.timer.Reset(w.timeout)
	err := w.out.Send(m)
	w.sendStart.Store(0)
	return err
}

// SendMsg passes raw frames through (the relay's fast path).
func (w *writeWatch) SendMsg(m any) error {
	w.sendStart.Store(time.Now().UnixNano())
	w.timer.Reset(w.timeout)
	err := w.out.SendMsg(m)
	w.sendStart.Store(0)
	return err
}
