package sharding

import (
	"strings"
	"testing"
)

func TestSynthetic(t *testing.T) {
	a, b := Synthetic(7, 200), Synthetic(7, 200)
	kinds := map[string]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("document %d differs for the same seed", i)
		}
		kinds[a[i].Kind]++
		if Language(a[i].Text, 0.99) != "mixed" && a[i].Kind != "dialogue" {
			// every item carries both languages
			t.Errorf("document %d is not bilingual: %q", i, a[i].Text)
		}
	}
	if len(kinds) != 4 {
		t.Fatalf("kinds %v", kinds)
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
