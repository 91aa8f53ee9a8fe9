package cache

import "testing"

func TestGuard(t *testing.T) {
	for _, tc := range []struct{ cached, query, want string }{
		{"How do I sort a list in Python?", "What's the way to sort a list in Python?", ""},
		{"What is the capital of Canada?", "Which city is Canada's capital?", ""},
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
		{"How many ounces are in one cup?", "1 cup equals how many ounces?", ""},
		{"How many hours of sleep do 16-year-olds need?", "How much sleep does a sixteen-year-old need?", ""},
		{"How do I calculate my BMI?", "What's the formula to work out my body mass index?", ""},
		{"What time zone is Tokyo in?", "Which time zone does Tokyo use?", ""},
		{"How do I stop Windows from updating?", "How do I make Windows update?", "negation"},
		{"Which jobs is AI likely to replace?", "Which jobs is AI unlikely to replace?", "negation"},
		{"Name metals that are magnetic but not conductive.", "Name metals that are conductive but not magnetic.", "negation"},
		{"write a dockerfile for a go app", "write a dockerfile for a java app", "entity"},
	} {
		if got := Guard(tc.cached, tc.query); got != tc.want {
			t.Errorf("Guard(%q, %q) = %q, want %q", tc.cached, tc.query, got, tc.want)
		}
	}
}

func TestSlotSwap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"write a dockerfile for a go app", "write a dockerfile for a java app", true},
		{"how do i change the default font in microsoft word", "how do i change the default font in google docs", true},
		{"how do i sort a list in python", "how do i reverse a list in python", true},
		{"How do I sort a list in Python?", "What's the way to sort a list in Python?", false}, // two spans
		{"how do i sort a list", "how do i sort a long list", false},                           // an insertion
		{"sort a list", "reverse a list", false},                                               // too little shared
		{"same words here", "same words here", false},
		{"how do i sort a list in python", "how can i sort a list in python", false}, // function words only
	} {
		if got := slotSwap(tc.a, tc.b); got != tc.want {
			t.Errorf("slotSwap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
