package tokenizer

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testConversations() [][]Message {
	return [][]Message{
		{{RoleUser, "안녕하세요?"}},
		{{RoleSystem, "You answer in the language you are asked in."}, {RoleUser, "What is 12 + 30?"}, {RoleAssistant, "12 + 30 = 42."},
			{RoleUser, "한국어로 말해 주세요."}},
		{{RoleUser, "Translate into Korean: the weather is nice."}, {RoleAssistant, "날씨가 좋아요."}},
		{{RoleUser, "  spaces\tand\nnewlines\n"}, {RoleAssistant, ""}, {RoleUser, "emoji 🙂 and 漢字"}},
		{},
	}
}

// A conversation encodes to its turns, each the role's token, the content
// as plain text and <|end|>, and a prompt ends with <|assistant|>; the
// text of special tokens in content stays text; unknown roles fail.
func TestEncodeChat(t *testing.T) {
	tk := trainSmall(t, 1000)
	id := func(s string) int32 { i, _ := tk.SpecialID(s); return i }
	got, err := tk.EncodeChat([]Message{{RoleSystem, "be brief"}, {RoleUser, "hi <|end|>"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]int32{id(System)}, tk.Encode("be brief")...)
	want = append(append(want, id(EndTurn), id(User)), tk.Encode("hi ")...)
	want = append(want, tk.encodeText("<|end|>")...)
	want = append(want, id(EndTurn), id(Assistant))
	if !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	// For training, the mask marks the assistant's content and <|end|>.
	ids, mask, err := tk.EncodeChatMasked([]Message{{RoleUser, "2+3?"}, {RoleAssistant, "5"}}, func(r string) bool { return r == RoleAssistant })
	if err != nil || len(mask) != len(ids) {
		t.Fatalf("masked: %v %v %v", ids, mask, err)
	}
	answer := slices.Index(ids, id(Assistant))
	for i := range ids {
		if mask[i] != (i > answer) {
			t.Fatalf("token %d (%d): mask %v", i, ids[i], mask[i])
		}
	}
	if _, err := tk.EncodeChat([]Message{{"tool", "x"}}, false); err == nil || !strings.Contains(err.Error(), `"tool"`) {
		t.Fatalf("unknown role: %v", err)
	}
	plain, _ := ByteLevel([]string{EOS, BOS, PAD})
	if _, err := plain.EncodeChat([]Message{{RoleUser, "x"}}, false); err == nil {
		t.Fatal("a tokenizer without chat tokens encoded a chat")
	}
}

// encodeText encodes s without reading special tokens.
func (t *Tokenizer) encodeText(s string) []int32 {
	var ids []int32
	e := t.encoder()
	defer t.encoders.Put(e)
	t.encodeOrdinary(e, &ids, s)
	return ids
}

// Hugging Face renders ChatTemplate to RenderChat's text and encodes it
// to EncodeChat's ids (@huggingface/jinja, as transformers.js; the same
// template language as transformers' apply_chat_template), and refuses an
// unknown role as EncodeChat does.
func TestChatTemplateHF(t *testing.T) {
	mod := hfModule(t)
	jinja, err := filepath.Abs("../.ci/node/node_modules/@huggingface/jinja")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(jinja, "package.json")); err != nil {
		t.Skip("@huggingface/jinja (npm) not installed; .ci/run installs it")
	}
	tk := trainSmall(t, 2000)
	dir := t.TempDir()
	tj := filepath.Join(dir, "tokenizer.json")
	if err := tk.Save(tj); err != nil {
		t.Fatal(err)
	}
	tmpl := filepath.Join(dir, "template.jinja")
	os.WriteFile(tmpl, []byte(ChatTemplate), 0o644)
	type conv struct {
		Messages []Message `json:"messages"`
		Prompt   bool      `json:"add_generation_prompt"`
	}
	var convs []conv
	for i, m := range testConversations() {
		convs = append(convs, conv{m, i%2 == 0})
	}
	convs = append(convs, conv{[]Message{{"tool", "x"}}, false})
	in := filepath.Join(dir, "convs.json")
	b, _ := json.Marshal(convs)
	os.WriteFile(in, b, 0o644)
	cmd := exec.Command("node", "testdata/hf_chat.js", tj, tmpl, in)
	cmd.Env = append(os.Environ(), "HF_TOKENIZERS_MODULE="+mod, "HF_JINJA_MODULE="+jinja)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var hf []struct {
		Text  string  `json:"text"`
		IDs   []int32 `json:"ids"`
		Error string  `json:"error"`
	}
	if err := json.Unmarshal(out, &hf); err != nil || len(hf) != len(convs) {
		t.Fatalf("%d results for %d conversations: %v", len(hf), len(convs), err)
	}
	for i, c := range convs {
		ours, err := tk.EncodeChat(c.Messages, c.Prompt)
		if i == len(convs)-1 {
			if err == nil || hf[i].Error == "" {
				t.Fatalf("unknown role: ours %v, Hugging Face %q", err, hf[i].Error)
			}
			continue
		}
		if err != nil || hf[i].Error != "" {
			t.Fatalf("conversation %d: %v / %s", i, err, hf[i].Error)
		}
		if text := RenderChat(c.Messages, c.Prompt); text != hf[i].Text {
			t.Fatalf("conversation %d rendered\nours %q\nHF   %q", i, text, hf[i].Text)
		}
		if !slices.Equal(ours, hf[i].IDs) {
			t.Fatalf("conversation %d:\nours %v\nHF   %v", i, ours, hf[i].IDs)
		}
	}
	t.Logf("%d conversations rendered and encoded identically", len(convs)-1)
}
