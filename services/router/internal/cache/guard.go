package cache

import (
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Guard checks, before a semantic hit is served, that the cached question
// and the new one do not differ in what embeddings are known to blur:
// negation, numbers and named entities. It returns "" when the hit may be
// served, else the kind of mismatch ("negation", "number" or "entity").
// The checks are lexical and deliberately strict: a refused paraphrase
// costs one generation, a served negation a wrong answer.
func Guard(cached, query string) string {
	a, b := words(cached), words(query)
	if negations(a) != negations(b) {
		return "negation"
	}
	if !slices.Equal(numbers(a), numbers(b)) {
		return "number"
	}
	if !sameEntities(a, b) {
		return "entity"
	}
	return ""
}

// word is a token of the text, with whether it starts a sentence.
type word struct {
	text    string // as written, without surrounding punctuation
	initial bool
}

func words(s string) []word {
	var out []word
	initial := true
	for f := range strings.FieldsSeq(s) {
		t := strings.TrimFunc(f, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
		if t != "" {
			out = append(out, word{t, initial})
		}
		initial = strings.ContainsAny(f[len(f)-1:], ".?!:;")
	}
	return out
}

// negators are the words (and the n't ending) that negate a clause.
var negators = map[string]bool{
	"not": true, "no": true, "never": true, "none": true, "nobody": true, "nothing": true, "nowhere": true,
	"neither": true, "nor": true, "without": true, "cannot": true, "unsafe": true, "except": true,
	"lack": true, "lacks": true, "lacking": true, "avoid": true, "fail": true, "fails": true,
}

// negations counts negators: an odd count differs from an even one, and
// two negations in one question and none in the other differ too.
func negations(ws []word) int {
	n := 0
	for _, w := range ws {
		l := strings.ToLower(w.text)
		if negators[l] || strings.HasSuffix(l, "n't") || strings.HasSuffix(l, "n’t") {
			n++
		}
	}
	return n
}

var numberWords = map[string]string{
	"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
	"eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
	"fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
	"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
	"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
	"first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6", "seventh": "7",
	"eighth": "8", "ninth": "9", "tenth": "10", "half": "0.5", "dozen": "12", "twice": "2", "double": "2", "triple": "3",
}

// numbers lists the numbers a text names, as digits, sorted: "3", "three"
// and "3rd" are the same number.
func numbers(ws []word) []string {
	var out []string
	for _, w := range ws {
		l := strings.ToLower(w.text)
		if v, ok := numberWords[l]; ok {
			out = append(out, v)
			continue
		}
		// Digits inside a word ("3rd", "x86", "v2.1", "17*23", "10:30").
		var cur strings.Builder
		flush := func() {
			if cur.Len() > 0 {
				n := strings.TrimRight(cur.String(), ".")
				if f, err := strconv.ParseFloat(strings.ReplaceAll(n, ",", ""), 64); err == nil {
					n = strconv.FormatFloat(f, 'g', -1, 64)
				}
				out = append(out, n)
				cur.Reset()
			}
		}
		for _, r := range l {
			if unicode.IsDigit(r) || (cur.Len() > 0 && (r == '.' || r == ',')) {
				cur.WriteRune(r)
			} else {
				flush()
			}
		}
		flush()
	}
	slices.Sort(out)
	return out
}

// openers are common words that start a question or request capitalised
// only because they start it.
var openers = map[string]bool{}

func init() {
	for w := range strings.FieldsSeq(`what how why when where who whom whose which is are was were am be do does did
		can could should would will shall may might must have has had tell explain describe give list show write
		please i i'm i've my me we our us you your it its if in on at for to from with about by of as the a an
		this that these those there here any some all each every name define compare help suggest recommend find
		calculate convert translate summarize summarise create make generate provide say let so and but or also hey
		hi hello quick simple best good most more many much could whats what's hows how's whats' is it's im ok okay
		quickly briefly roughly approximately exactly really just then now today yesterday tomorrow other another
		one first second third new old big small long short high low good bad main key top basic simple easy hard
		pros cons difference differences ways way steps step tips tip ideas idea reasons reason benefits examples
		example type types kind kinds rules rule recipe instructions guide question questions answer share offer
		outline walk teach clarify break identify state detail elaborate discuss note mention spell draft rewrite
		fix debug check plan need want looking trying wondering curious assuming suppose imagine`) {
		openers[w] = true
	}
}

// sameEntities compares the capitalised words (names) of two texts, case
// folded: a word that starts a sentence counts only when it is not a common
// opener. A name in one text must appear in the other, as a name or not.
func sameEntities(a, b []word) bool {
	return namesIn(a, b) && namesIn(b, a)
}

func namesIn(a, b []word) bool {
	other := map[string]bool{}
	for _, w := range b {
		other[fold(w.text)] = true
	}
	for _, w := range a {
		r := []rune(w.text)
		if !unicode.IsUpper(r[0]) {
			continue
		}
		l := fold(w.text)
		if w.initial && openers[strings.ToLower(w.text)] || pronounI(w.text) {
			continue
		}
		if !other[l] {
			return false
		}
	}
	return true
}

// fold lowercases a word and drops a possessive or plural s.
func fold(s string) string {
	l := strings.ToLower(s)
	for _, suf := range []string{"'s", "’s", "s"} {
		if strings.HasSuffix(l, suf) && len(l) > len(suf)+2 {
			return strings.TrimSuffix(l, suf)
		}
	}
	return l
}

// pronounI reports "I" and its contractions, capitalised anywhere.
func pronounI(s string) bool {
	switch strings.ReplaceAll(s, "’", "'") {
	case "I", "I'm", "I've", "I'd", "I'll":
		return true
	}
	return false
}
