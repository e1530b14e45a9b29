package tokenizer

import (
	"fmt"
	"strings"
)

// The chat format, one for the project. A conversation is its messages in
// order, each the role's token, the content and <|end|>; a prompt for the
// model's answer ends with <|assistant|>, and the model ends its turn with
// <|end|>:
//
//	<|system|>You answer briefly.<|end|><|user|>안녕?<|end|><|assistant|>
//
// No newlines or BOS are added, so what a turn's text encodes to does not
// depend on its neighbours. ChatTemplate says the same in Jinja for Hugging
// Face (tokenizer_config.json's chat_template, GGUF's
// tokenizer.chat_template): transformers' apply_chat_template renders it
// and encodes the result to the ids EncodeChat gives, for any content
// without special-token text in it. Content is encoded as plain text
// (EncodeChat never reads "<|end|>" typed by a user as the control
// token), where a rendered template would be split at it: an injection
// the template cannot prevent.

// Chat roles.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// ChatTemplate is the chat format as a Hugging Face chat template.
const ChatTemplate = "{%- for message in messages -%}" +
	"{%- if message['role'] not in ['system', 'user', 'assistant'] -%}" +
	"{{- raise_exception('role ' + message['role'] + ' is not system, user or assistant') -}}" +
	"{%- endif -%}" +
	"{{- '<|' + message['role'] + '|>' + message['content'] + '<|end|>' -}}" +
	"{%- endfor -%}" +
	"{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Chat reports whether t has the chat format's special tokens.
func (t *Tokenizer) Chat() bool {
	for _, s := range []string{System, User, Assistant, EndTurn} {
		if _, ok := t.SpecialID(s); !ok {
			return false
		}
	}
	return true
}

// roleToken is the special token that opens a turn of role.
func roleToken(role string) (string, bool) {
	switch role {
	case RoleSystem:
		return System, true
	case RoleUser:
		return User, true
	case RoleAssistant:
		return Assistant, true
	}
	return "", false
}

// EncodeChat encodes a conversation in the chat format, with the opening
// of the assistant's next turn when prompt is set. It fails on an unknown
// role or a tokenizer without the chat's special tokens.
func (t *Tokenizer) EncodeChat(msgs []Message, prompt bool) ([]int32, error) {
	ids, _, err := t.encodeChat(msgs, prompt, nil)
	return ids, err
}

// EncodeChatMasked encodes a conversation for training: mask marks the
// tokens a model learns to produce — the content and closing <|end|> of
// each message whose role train accepts (a role's own token never: it is
// given).
func (t *Tokenizer) EncodeChatMasked(msgs []Message, train func(role string) bool) ([]int32, []bool, error) {
	return t.encodeChat(msgs, false, train)
}

func (t *Tokenizer) encodeChat(msgs []Message, prompt bool, train func(string) bool) ([]int32, []bool, error) {
	end, ok := t.SpecialID(EndTurn)
	if !ok {
		return nil, nil, fmt.Errorf("tokenizer: no %s token: not a chat tokenizer", EndTurn)
	}
	e := t.encoder()
	defer t.encoders.Put(e)
	var ids []int32
	var mask []bool
	for i, m := range msgs {
		tok, ok := roleToken(m.Role)
		if !ok {
			return nil, nil, fmt.Errorf("chat: message %d: role %q is not %s, %s or %s", i, m.Role, RoleSystem, RoleUser, RoleAssistant)
		}
		id, ok := t.SpecialID(tok)
		if !ok {
			return nil, nil, fmt.Errorf("tokenizer: no %s token: not a chat tokenizer", tok)
		}
		ids = append(ids, id)
		from := len(ids)
		t.encodeOrdinary(e, &ids, m.Content)
		ids = append(ids, end)
		if train != nil {
			on := train(m.Role)
			mask = append(mask, false)
			for range ids[from:] {
				mask = append(mask, on)
			}
		}
	}
	if prompt {
		id, ok := t.SpecialID(Assistant)
		if !ok {
			return nil, nil, fmt.Errorf("tokenizer: no %s token: not a chat tokenizer", Assistant)
		}
		ids = append(ids, id)
	}
	return ids, mask, nil
}

// RenderChat is the conversation as text, as the Jinja template renders
// it.
func RenderChat(msgs []Message, prompt bool) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|" + m.Role + "|>" + m.Content + EndTurn)
	}
	if prompt {
		b.WriteString(Assistant)
	}
	return b.String()
}
