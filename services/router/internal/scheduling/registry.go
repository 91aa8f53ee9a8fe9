package scheduling

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// Factories decode their plugin's parameters (raw JSON, possibly empty).
type (
	FilterFactory func(params json.RawMessage) (Filter, error)
	ScorerFactory func(params json.RawMessage) (Scorer, error)
	PickerFactory func(params json.RawMessage) (Picker, error)
)

// Registry maps plugin type names to factories. Fill it at start-up (see
// plugins.Register); it is read-only afterwards.
type Registry struct {
	filters map[string]FilterFactory
	scorers map[string]ScorerFactory
	pickers map[string]PickerFactory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{filters: map[string]FilterFactory{}, scorers: map[string]ScorerFactory{}, pickers: map[string]PickerFactory{}}
}

func register[F any](m map[string]F, kind, name string, f F) {
	if _, dup := m[name]; dup {
		panic(fmt.Sprintf("%s plugin %q registered twice", kind, name))
	}
	m[name] = f
}

// AddFilter registers a filter type.
func (r *Registry) AddFilter(name string, f FilterFactory) { register(r.filters, "filter", name, f) }

// AddScorer registers a scorer type.
func (r *Registry) AddScorer(name string, f ScorerFactory) { register(r.scorers, "scorer", name, f) }

// AddPicker registers a picker type.
func (r *Registry) AddPicker(name string, f PickerFactory) { register(r.pickers, "picker", name, f) }

// PluginConfig names a plugin type and its parameters.
type PluginConfig struct {
	Type   string          `json:"type"`
	Params json.RawMessage `json:"params,omitempty"`
}

// ScorerConfig is a scorer with its weight.
type ScorerConfig struct {
	PluginConfig
	Weight float64 `json:"weight"`
}

// ProfileConfig configures one strategy.
type ProfileConfig struct {
	Filters []PluginConfig `json:"filters"`
	Scorers []ScorerConfig `json:"scorers"`
	Picker  PluginConfig   `json:"picker"`
}

// Config is the router's scheduling configuration (a JSON file).
type Config struct {
	// Default strategy for requests that name none.
	Default string `json:"default"`
	// Strategies by name.
	Strategies map[string]ProfileConfig `json:"strategies"`
	// Aliases map a name clients use to the models that may serve it, in
	// order of preference (a group may span models and formats).
	Aliases map[string][]string `json:"aliases,omitempty"`
	// Fallbacks are each model's (or alias's) fallback chain, used when a
	// request names none.
	Fallbacks map[string][]string `json:"fallbacks,omitempty"`
	// Policies override the router's request limits per model.
	Policies map[string]Policy `json:"policies,omitempty"`
}

// Policy is one model's request limits; zero fields keep the router's
// defaults.
type Policy struct {
	// FirstTokenTimeout: an attempt without a first token this long after
	// it was sent is cancelled and the request fails over.
	FirstTokenTimeout Duration `json:"first_token_timeout,omitempty"`
	// StallTimeout: a stream without a new token this long is cancelled
	// and continued elsewhere.
	StallTimeout Duration `json:"stall_timeout,omitempty"`
	// MaxAttempts bounds the attempts on this model within one request.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// FallbackOnRateLimit goes to the next model at once on a rate limit
	// instead of waiting for the upstream's Retry-After.
	FallbackOnRateLimit bool `json:"fallback_on_rate_limit,omitempty"`
	// QuotaMaxTokens is the max_tokens given to (and reserved for) a
	// request that sets none, under an API key with a token quota.
	QuotaMaxTokens int `json:"quota_max_tokens,omitempty"`
	// Hedge turns hedged requests on or off for this model, whatever the
	// router's -hedge says (hosted models hedge only when it is true).
	Hedge *bool `json:"hedge,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("1.5s").
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("durations are strings such as \"1.5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadConfig reads a JSON configuration file, rejecting unknown fields.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, err
	}
	defer f.Close()
	var c Config
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Scheduler holds the built strategies and aliases.
type Scheduler struct {
	profiles  map[string]*Profile
	def       string
	aliases   map[string][]string
	fallbacks map[string][]string
	policies  map[string]Policy
}

// Build constructs every strategy of c.
func (r *Registry) Build(c Config) (*Scheduler, error) {
	s := &Scheduler{profiles: map[string]*Profile{}, def: c.Default, aliases: c.Aliases, fallbacks: c.Fallbacks, policies: c.Policies}
	for name, pc := range c.Strategies {
		p := &Profile{Name: name}
		for i, fc := range pc.Filters {
			f, ok := r.filters[fc.Type]
			if !ok {
				return nil, fmt.Errorf("strategy %q: filters[%d]: unknown filter %q (known: %s)", name, i, fc.Type, keys(r.filters))
			}
			v, err := f(fc.Params)
			if err != nil {
				return nil, fmt.Errorf("strategy %q: filter %q: %w", name, fc.Type, err)
			}
			p.Filters = append(p.Filters, NamedFilter{Name: fc.Type, Filter: v})
			p.addObserver(v)
		}
		for i, sc := range pc.Scorers {
			f, ok := r.scorers[sc.Type]
			if !ok {
				return nil, fmt.Errorf("strategy %q: scorers[%d]: unknown scorer %q (known: %s)", name, i, sc.Type, keys(r.scorers))
			}
			if sc.Weight <= 0 {
				return nil, fmt.Errorf("strategy %q: scorer %q needs a positive weight", name, sc.Type)
			}
			v, err := f(sc.Params)
			if err != nil {
				return nil, fmt.Errorf("strategy %q: scorer %q: %w", name, sc.Type, err)
			}
			p.Scorers = append(p.Scorers, WeightedScorer{Name: sc.Type, Scorer: v, Weight: sc.Weight})
			p.addObserver(v)
		}
		f, ok := r.pickers[pc.Picker.Type]
		if !ok {
			return nil, fmt.Errorf("strategy %q: unknown picker %q (known: %s)", name, pc.Picker.Type, keys(r.pickers))
		}
		v, err := f(pc.Picker.Params)
		if err != nil {
			return nil, fmt.Errorf("strategy %q: picker %q: %w", name, pc.Picker.Type, err)
		}
		p.Picker = v
		p.addObserver(v)
		s.profiles[name] = p
	}
	if _, ok := s.profiles[c.Default]; !ok {
		return nil, fmt.Errorf("default strategy %q is not configured (configured: %s)", c.Default, keys(s.profiles))
	}
	for name, pol := range c.Policies {
		if pol.MaxAttempts < 0 {
			return nil, fmt.Errorf("policies[%q].max_attempts must not be negative", name)
		}
	}
	for alias, models := range c.Aliases {
		if len(models) == 0 {
			return nil, fmt.Errorf("alias %q names no models", alias)
		}
	}
	return s, nil
}

func (p *Profile) addObserver(v any) {
	if o, ok := v.(Observer); ok {
		p.observers = append(p.observers, o)
	}
}

func keys[V any](m map[string]V) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}

// Profile returns the named strategy ("" is the default).
func (s *Scheduler) Profile(name string) (*Profile, bool) {
	if name == "" {
		name = s.def
	}
	p, ok := s.profiles[name]
	return p, ok
}

// Default is the default strategy's name.
func (s *Scheduler) Default() string { return s.def }

// Names lists the strategies, sorted.
func (s *Scheduler) Names() string { return keys(s.profiles) }

// Fallbacks returns the configured fallback chain of a model or alias.
func (s *Scheduler) Fallbacks(name string) []string { return s.fallbacks[name] }

// Policy returns the limits configured for a model (or, failing that, the
// alias the client named).
func (s *Scheduler) Policy(model, requested string) Policy {
	if p, ok := s.policies[model]; ok {
		return p
	}
	return s.policies[requested]
}

// Configured reports whether the configuration names model: an alias, or a
// model with a fallback chain or a policy.
func (s *Scheduler) Configured(model string) bool {
	_, alias := s.aliases[model]
	_, fb := s.fallbacks[model]
	_, pol := s.policies[model]
	return alias || fb || pol
}

// Resolve returns the models that may serve name: an alias's members, or
// the name itself.
func (s *Scheduler) Resolve(name string) []string {
	if m, ok := s.aliases[name]; ok {
		return m
	}
	return []string{name}
}
