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
	if negations(a) != negations(b) || !slices.Equal(negated(a), negated(b)) || opposed(a, b) || opposed(b, a) {
		return "negation"
	}
	if !sameNumbers(a, b) {
		return "number"
	}
	if !sameEntities(a, b) || slotSwap(cached, query) {
		return "entity"
	}
	return ""
}

// slotSwap reports two questions identical but for one span of at most two
// words on each side ("… a dockerfile for a go app" / "… for a java app",
// "… in microsoft word" / "… in google docs"): whoever changes one slot of
// a question and keeps the rest asks about something else, while a
// paraphrase rewords more than one place. (On the labelled set's tune
// split no paraphrase is such a swap, and most entity swaps typed in lower
// case, which the capitalisation check cannot see, are.)
func slotSwap(a, b string) bool {
	x, y := slotTokens(a), slotTokens(b)
	// The longest common subsequence, then the spans between its matches.
	n, m := len(x), len(y)
	if n == 0 || m == 0 || n > 200 || m > 200 {
		return false
	}
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	if lcs[0][0] < 3 {
		return false
	}
	// Walk the alignment; each run of unmatched words between matches is
	// one changed span, dx words of a against dy of b.
	// One changed span only, with a content word on both sides: a swap of
	// function words ("how do i" / "how can i") is rewording.
	spans, content := 0, false
	var sx, sy []string
	closeSpan := func() bool {
		if len(sx) == 0 && len(sy) == 0 {
			return true
		}
		spans++
		ok := len(sx) > 0 && len(sy) > 0 && len(sx) <= 2 && len(sy) <= 2 // a replacement, not an insertion or deletion
		content = !onlyFunctionWords(sx) && !onlyFunctionWords(sy)
		sx, sy = sx[:0], sy[:0]
		return ok
	}
	for i, j := 0, 0; i < n || j < m; {
		switch {
		case i < n && j < m && x[i] == y[j] && lcs[i][j] == lcs[i+1][j+1]+1:
			if !closeSpan() {
				return false
			}
			i, j = i+1, j+1
		case j == m || i < n && lcs[i+1][j] >= lcs[i][j+1]:
			sx, i = append(sx, x[i]), i+1
		default:
			sy, j = append(sy, y[j]), j+1
		}
	}
	return closeSpan() && spans == 1 && content
}

func onlyFunctionWords(ws []string) bool {
	for _, w := range ws {
		if !function[w] && !openers[w] {
			return false
		}
	}
	return true
}

// slotTokens are a text's lower-case words, keeping characters that name
// things ("c#", "c++", "next.js").
func slotTokens(s string) []string {
	var out []string
	for f := range strings.FieldsFuncSeq(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("'+#.", r)
	}) {
		if f = strings.Trim(f, ".'"); f != "" {
			out = append(out, f)
		}
	}
	return out
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

// negated lists what each negator applies to: the next word that is not a
// function word ("continuous but not differentiable" negates
// "differentiable"), so swapping what is negated is caught.
func negated(ws []word) []string {
	var out []string
	for i, w := range ws {
		l := strings.ToLower(w.text)
		if !negators[l] && !strings.HasSuffix(l, "n't") && !strings.HasSuffix(l, "n’t") {
			continue
		}
		for _, next := range ws[i+1:] {
			if n := strings.ToLower(next.text); !function[n] {
				out = append(out, fold(n))
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// function words are skipped when looking for a negator's scope.
var function = map[string]bool{}

func init() {
	for w := range strings.FieldsSeq(`a an the to in on at of for from by with as be been being is are was were do does
		did have has had very really too so that this these those it its my your our their his her any some all
		more most much many quite just even also yet still ever at all`) {
		function[w] = true
	}
}

// antonymPrefixes and suffixes turn a word into its opposite.
var (
	antonymPrefixes = []string{"un", "non", "non-", "in", "im", "il", "ir", "dis", "de", "anti", "anti-", "mis"}
	antonymSuffixes = []string{"less", "-less", "-free", "free"}
)

// opposites maps a word to the words of opposite meaning.
var opposites = map[string][]string{}

func init() {
	for pair := range strings.FieldsSeq(`enable:disable include:exclude including:excluding allow:forbid allow:prohibit
		add:remove increase:decrease increases:decreases more:less most:least before:after above:below maximum:minimum
		max:min best:worst start:stop open:close win:lose cheap:expensive cheapest:priciest hot:cold fast:slow
		faster:slower up:down always:never all:none accept:reject true:false pros:cons advantages:disadvantages
		benefits:risks benefits:drawbacks positive:negative import:export buy:sell push:pull upload:download
		love:hate like:dislike encrypt:decrypt compress:decompress first:last oldest:newest old:new older:newer
		largest:smallest biggest:smallest large:small big:small longest:shortest long:short highest:lowest high:low
		heavy:light hardest:easiest hard:easy easier:harder strong:weak increase:reduce gain:lose gaining:losing
		north:south east:west northern:southern eastern:western left:right lot:barely lot:little often:rarely
		often:seldom often:never keep:skip including:skip include:skip on:off`) {
		a, b, _ := strings.Cut(pair, ":")
		opposites[a] = append(opposites[a], b)
		opposites[b] = append(opposites[b], a)
	}
	for _, w := range []string{"barely", "hardly", "rarely", "seldom", "scarcely", "stop", "prevent", "prevents"} {
		negators[w] = true
	}
}

// opposed reports a word of a that the other text holds in its opposite
// form: a prefix or suffix of negation ("likely" / "unlikely", "skin" /
// "skinless") or an antonym, when the word itself is not in b.
func opposed(a, b []word) bool {
	inB := map[string]bool{}
	for _, w := range b {
		inB[strings.ToLower(w.text)] = true
	}
	inA := map[string]bool{}
	for _, w := range a {
		inA[strings.ToLower(w.text)] = true
	}
	for w := range inA {
		if inB[w] {
			continue
		}
		for _, p := range antonymPrefixes {
			if stem, ok := strings.CutPrefix(w, p); ok && len(stem) > 2 && inB[stem] && !inA[stem] {
				return true
			}
		}
		for _, suf := range antonymSuffixes {
			if stem, ok := strings.CutSuffix(w, suf); ok && len(stem) > 2 && inB[stem] && !inA[stem] {
				return true
			}
		}
		for _, o := range opposites[w] {
			if inB[o] && !inA[o] {
				return true
			}
		}
	}
	return false
}

var numberWords = map[string]string{
	"zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
	"eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
	"fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
	"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
	"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
	"first": "1", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6", "seventh": "7",
	"eighth": "8", "ninth": "9", "tenth": "10", "half": "0.5", "dozen": "12", "twice": "2", "double": "2", "triple": "3",
}

// sameNumbers compares the numbers two texts name; a 1 in one may be the
// word "one" in the other (which is left out of numbers: "one of them",
// "one pound" mean a, not a count to compare).
func sameNumbers(a, b []word) bool {
	na, nb := numbers(a), numbers(b)
	na, nb = dropOnes(na, nb, b), dropOnes(nb, na, a)
	return slices.Equal(na, nb)
}

// dropOnes removes the 1s of x that y lacks, as many as the other text
// has the word "one".
func dropOnes(x, y []string, other []word) []string {
	spare := 0
	for _, w := range other {
		if strings.EqualFold(w.text, "one") {
			spare++
		}
	}
	ones := 0
	for _, v := range y {
		if v == "1" {
			ones++
		}
	}
	var out []string
	for _, v := range x {
		if v == "1" {
			if ones > 0 {
				ones--
			} else if spare > 0 {
				spare--
				continue
			}
		}
		out = append(out, v)
	}
	return out
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
		if v, ok := compoundNumber(l); ok {
			out = append(out, v)
			continue
		}
		if strings.Contains(l, "-") { // "sixteen-year-old"
			for part := range strings.SplitSeq(l, "-") {
				if v, ok := numberWords[part]; ok {
					out = append(out, v)
				}
			}
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

// compoundNumber reads "twenty-five" as 25.
func compoundNumber(l string) (string, bool) {
	parts := strings.Split(l, "-")
	if len(parts) < 2 {
		return "", false
	}
	sum := 0
	for _, p := range parts {
		v, ok := numberWords[p]
		if !ok {
			return "", false
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return "", false
		}
		sum += n
	}
	return strconv.Itoa(sum), true
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
		if !unicode.IsUpper(r[0]) || pronounI(w.text) {
			continue
		}
		// A capitalised first word is a name only when the other text
		// starts with a name-like word too ("Python lists: …" / "Rust
		// lists: …"); else it is capitalised for starting the sentence.
		if w.initial && (openers[strings.ToLower(w.text)] || !startsWithName(b)) {
			continue
		}
		if !other[fold(w.text)] && !acronymOf(w.text, b) {
			return false
		}
	}
	return true
}

// acronymOf reports an all-capitals word spelled out by the initials of
// consecutive words of the other text ("BMI", "body mass index").
func acronymOf(s string, ws []word) bool {
	r := []rune(s)
	if len(r) < 2 || len(r) > 6 || strings.ToUpper(s) != s {
		return false
	}
	for i := 0; i+len(r) <= len(ws); i++ {
		match := true
		for k, c := range r {
			if w := []rune(ws[i+k].text); unicode.ToUpper(w[0]) != c {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// startsWithName reports whether a text's first word is capitalised and
// not a common opener.
func startsWithName(ws []word) bool {
	return len(ws) > 0 && unicode.IsUpper([]rune(ws[0].text)[0]) && !openers[strings.ToLower(ws[0].text)] && !pronounI(ws[0].text)
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
