package sharding

import (
	"strings"
	"testing"
)

func TestSynthetic(t *testing.T) {
	a, b := Synthetic(7, 200), Synthetic(7, 200)
	kinds, langs := map[string]int{}, map[string]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("document %d differs for the same seed", i)
		}
		kinds[a[i].Kind]++
		lang := Language(a[i].Text, 0.99)
		if a[i].Kind == "translation" && lang != "mixed" {
			t.Errorf("translation item %d is not bilingual: %q", i, a[i].Text)
		}
		if lang != "mixed" && lang != Language(a[i].Text, DefaultFilters().LangShare) {
			t.Errorf("document %d: %s at share 0.99 but not at the default share: %q", i, lang, a[i].Text)
		}
		langs[lang]++
	}
	if len(kinds) != 4 {
		t.Fatalf("kinds %v", kinds)
	}
	// Each language gets monolingual documents, and bilingual ones remain.
	for _, l := range []string{"ko", "en", "mixed"} {
		if langs[l] < 200/10 {
			t.Errorf("%d %s documents of 200 (%v)", langs[l], l, langs)
		}
	}
	if Synthetic(8, 5)[0] == a[0] && Synthetic(8, 5)[1] == a[1] {
		t.Fatal("seed does not change the output")
	}
	for _, d := range a {
		if d.Kind == "arithmetic" && strings.Contains(d.Text, "-") {
			t.Fatalf("negative result in %q", d.Text)
		}
	}
}
