package cache

import "testing"

func TestGuard(t *testing.T) {
	for _, tc := range []struct{ cached, query, want string }{
		{"How do I sort a list in Python?", "What's the way to sort a list in Python?", ""},
		{"What is the capital of Australia?", "Which city is Australia's capital?", ""},
		{"Give me 3 tips for sleeping better.", "Share three tips for better sleep.", ""},
		{"Is coffee bad for you?", "Is coffee not bad for you?", "negation"},
		{"Why doesn't my code compile?", "Why does my code compile?", "negation"},
		{"Which foods are safe for dogs?", "What should dogs never eat?", "negation"},
		{"What is 17 * 23?", "What is 17 * 24?", "number"},
		{"Who won the World Cup in 2014?", "Who won the World Cup in 2018?", "number"},
		{"What is the 2nd largest planet?", "What is the 3rd largest planet?", "number"},
		{"What is the capital of France?", "What is the capital of Germany?", "entity"},
		{"Python lists: how do I copy one?", "Rust lists: how do I copy one?", "entity"},
		{"Explain how Rust handles memory.", "How does Rust handle memory?", ""},
	} {
		if got := Guard(tc.cached, tc.query); got != tc.want {
			t.Errorf("Guard(%q, %q) = %q, want %q", tc.cached, tc.query, got, tc.want)
		}
	}
}
