// Package rpcerr is the one place where Go errors become gRPC statuses.
//
// Code inside a service returns ordinary wrapped errors; errors that carry a
// gRPC meaning are made with the constructors here (InvalidArgument, NotFound,
// ...) and stay matchable with errors.Is against the sentinels. A server
// converts once, at its edge, with ToStatus.
package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Sentinels, one per gRPC code that services produce on purpose.
var (
	ErrInvalidArgument    = &kind{codes.InvalidArgument}
	ErrNotFound           = &kind{codes.NotFound}
	ErrResourceExhausted  = &kind{codes.ResourceExhausted}
	ErrUnavailable        = &kind{codes.Unavailable}
	ErrFailedPrecondition = &kind{codes.FailedPrecondition}
	ErrUnimplemented      = &kind{codes.Unimplemented}
	ErrAlreadyExists      = &kind{codes.AlreadyExists}
)

type kind struct{ code codes.Code }

func (k *kind) Error() string { return k.code.String() }

// Domain is the google.rpc.ErrorInfo domain of the reasons below.
const Domain = "llmrouter"

// Reasons, carried as a google.rpc.ErrorInfo detail, for failures that
// concern one model rather than the worker that reported them: the router
// keys its retries and circuits on them, and a status without a reason is
// the worker's (or the connection's) as a whole.
const (
	// ReasonUpstreamUnavailable: the model's upstream failed (an HTTP 5xx, a
	// connection reset, a TLS failure, a malformed answer); may pass.
	ReasonUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	// ReasonRateLimited: the model's upstream asked to slow down (HTTP 429).
	ReasonRateLimited = "RATE_LIMITED"
	// ReasonContextLength: the prompt and max_tokens do not fit the model's
	// context; retrying the same model cannot help.
	ReasonContextLength = "CONTEXT_LENGTH_EXCEEDED"
	// ReasonContentFiltered: the upstream refused the content; no retry.
	ReasonContentFiltered = "CONTENT_FILTERED"
	// ReasonModelNotHosted: the worker does not host the model (any more);
	// a router's view of it is stale.
	ReasonModelNotHosted = "MODEL_NOT_HOSTED"
	// ReasonCapabilityMissing: the request needs a capability (tools,
	// structured output, logprobs, ...) no model that could serve it has.
	ReasonCapabilityMissing = "CAPABILITY_MISSING"
	// ReasonSchemaUnsupported: a response format's or a strict tool's JSON
	// Schema uses features the local grammar cannot express (the message
	// names them); a model that takes any JSON Schema may still serve it.
	ReasonSchemaUnsupported = "SCHEMA_UNSUPPORTED"
	// ReasonOverloaded: the router itself is at capacity (its admission
	// limit), not the caller's quota: Anthropic's API calls this 529.
	ReasonOverloaded = "OVERLOADED"
	// ReasonQuota: the caller's API key is over its quota or its
	// concurrency cap (Anthropic's 429, as against 529 for capacity).
	ReasonQuota = "QUOTA_EXCEEDED"
	// ReasonCacheOption: the request's cache options cannot apply (the
	// router has no cache, or the request is not deterministic).
	ReasonCacheOption = "CACHE_OPTION"
)

// Error is an error with a gRPC code, a client-facing message, an optional
// retry hint and an optional reason. errors.Is(err, ErrX) holds for the
// sentinel of its code.
type Error struct {
	Code       codes.Code
	Msg        string
	RetryAfter time.Duration
	Reason     string
	// Metadata is the reason's detail (ErrorInfo metadata), e.g. which
	// capability is missing (MetaCapability).
	Metadata map[string]string
}

// MetaCapability is the metadata key naming, with ReasonCapabilityMissing,
// the capability a request needs that its first model lacks: one of
// structured_output, any_json_schema, tools, logprobs.
const MetaCapability = "capability"

// MetaSchemaOf, with capability any_json_schema, says whose schema the
// local grammar refused: "response_format" or "tools".
const MetaSchemaOf = "schema_of"

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(e, ErrNotFound) and friends work.
func (e *Error) Is(target error) bool {
	k, ok := target.(*kind)
	return ok && k.code == e.Code
}

// GRPCStatus lets grpc-go and status.FromError read the status directly.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Msg)
	var details []protoadapt.MessageV1
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if e.Reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: e.Reason, Domain: Domain, Metadata: e.Metadata})
	}
	if len(details) > 0 {
		if d, err := st.WithDetails(details...); err == nil {
			return d
		}
	}
	return st
}

// WithReason returns err, converted to an *Error if need be, with reason
// attached (see the Reason constants).
func WithReason(err error, reason string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		c := *e
		c.Reason = reason
		return &c
	}
	st := status.Convert(ToStatus(err))
	return &Error{Code: st.Code(), Msg: st.Message(), RetryAfter: RetryAfter(err), Reason: reason}
}

// WithMetadata returns err, converted to an *Error if need be, with the
// reason's metadata key set to value.
func WithMetadata(err error, key, value string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		st := status.Convert(ToStatus(err))
		e = &Error{Code: st.Code(), Msg: st.Message(), RetryAfter: RetryAfter(err), Reason: Reason(err)}
	}
	c := *e
	c.Metadata = maps.Clone(e.Metadata)
	if c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	c.Metadata[key] = value
	return &c
}

// Metadata returns the value of key in the reason's metadata an error
// carries (ours or a peer's), or "".
func Metadata(err error, key string) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Metadata[key]
	}
	st, _ := status.FromError(ToStatus(err))
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == Domain {
			return ei.GetMetadata()[key]
		}
	}
	return ""
}

// Reason returns the reason an error carries (ours or a peer's status's
// ErrorInfo in our domain), or "".
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	st, _ := status.FromError(ToStatus(err))
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == Domain {
			return ei.GetReason()
		}
	}
	return ""
}

func newf(c codes.Code, format string, args ...any) *Error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// InvalidArgument reports a bad request parameter.
func InvalidArgument(format string, args ...any) error {
	return newf(codes.InvalidArgument, format, args...)
}

// NotFound reports an unknown model or resource.
func NotFound(format string, args ...any) error { return newf(codes.NotFound, format, args...) }

// Unavailable reports that nothing can serve the request now; retrying later
// or elsewhere may succeed.
func Unavailable(format string, args ...any) error {
	return newf(codes.Unavailable, format, args...)
}

// FailedPrecondition reports an operation the current state does not allow.
func FailedPrecondition(format string, args ...any) error {
	return newf(codes.FailedPrecondition, format, args...)
}

// Unauthenticated reports a missing or invalid credential. The message must
// never contain the credential.
func Unauthenticated(format string, args ...any) error {
	return newf(codes.Unauthenticated, format, args...)
}

// PermissionDenied reports a credential that may not do what was asked.
func PermissionDenied(format string, args ...any) error {
	return newf(codes.PermissionDenied, format, args...)
}

// Unimplemented reports an operation the backend does not support.
func Unimplemented(format string, args ...any) error {
	return newf(codes.Unimplemented, format, args...)
}

// ResourceExhausted reports overload, with a hint of when to retry.
func ResourceExhausted(retryAfter time.Duration, format string, args ...any) error {
	e := newf(codes.ResourceExhausted, format, args...)
	e.RetryAfter = retryAfter
	return e
}

// ToStatus converts any error to a gRPC status error. Errors that already
// carry a status (ours or a peer's) keep it; context errors map to Canceled
// and DeadlineExceeded; anything else is Internal.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e.GRPCStatus().Err()
	}
	// A peer's status, possibly wrapped, keeps its code.
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// Code returns the gRPC code ToStatus would give err.
func Code(err error) codes.Code { return status.Code(ToStatus(err)) }

// RetryAfter returns the retry hint carried by a status error, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	st, _ := status.FromError(ToStatus(err))
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}
