package model

import "fmt"

// Tensor is one named range of the flat parameter vector. Names and shapes
// are Hugging Face Llama's, so a checkpoint loads into LlamaForCausalLM.
type Tensor struct {
	Name   string
	Shape  []int // row-major; a Linear weight is [out, in]
	Offset int   // first element in the flat vector
	Size   int   // number of elements
	Decay  bool  // AdamW weight decay applies (matrices yes, norm gains no)
}

// Layout is the size table of all parameters in one flat buffer. Gradients
// and optimizer moments use the same layout, so gradsync and codecs can work
// on plain ranges.
type Layout struct {
	Tensors []Tensor
	Size    int
	byName  map[string]int
}

// NewLayout lays out the parameters of c in Hugging Face order.
func NewLayout(c Config) *Layout {
	l := &Layout{byName: map[string]int{}}
	add := func(name string, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		l.byName[name] = len(l.Tensors)
		l.Tensors = append(l.Tensors, Tensor{Name: name, Shape: shape, Offset: l.Size, Size: n, Decay: len(shape) > 1})
		l.Size += n
	}
	hd := c.HeadDim()
	add("model.embed_tokens.weight", c.Vocab, c.Dim)
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", c.Dim)
		add(p+"self_attn.q_proj.weight", c.Heads*hd, c.Dim)
		add(p+"self_attn.k_proj.weight", c.KVHeads*hd, c.Dim)
		add(p+"self_attn.v_proj.weight", c.KVHeads*hd, c.Dim)
		add(p+"self_attn.o_proj.weight", c.Dim, c.Heads*hd)
		add(p+"post_attention_layernorm.weight", c.Dim)
		add(p+"mlp.gate_proj.weight", c.FFNDim, c.Dim)
		add(p+"mlp.up_proj.weight", c.FFNDim, c.Dim)
		add(p+"mlp.down_proj.weight", c.Dim, c.FFNDim)
	}
	add("model.norm.weight", c.Dim)
	if !c.Tied {
		add("lm_head.weight", c.Vocab, c.Dim)
	}
	return l
}

// Lookup finds a tensor by name.
func (l *Layout) Lookup(name string) (Tensor, bool) {
	i, ok := l.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return l.Tensors[i], true
}

func (l *Layout) must(name string) Tensor {
	t, ok := l.Lookup(name)
	if !ok {
		panic("model: layout has no tensor " + name)
	}
	return t
}

// Locate returns the tensor holding flat parameter i and i's offset in it
// ("" when i is out of range).
func (l *Layout) Locate(i int) (name string, off int) {
	for _, t := range l.Tensors {
		if i >= t.Offset && i < t.Offset+t.Size {
			return t.Name, i - t.Offset
		}
	}
	return "", 0
}
