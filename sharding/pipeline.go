package sharding

import (
	"context"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/text/unicode/norm"

	"github.com/fomnet/fomnet/tokenizer"
)

// pdoc is one document on its way through Prepare: read in input order,
// analysed by any worker (the costly part, which depends on nothing but the
// document), then decided and packed in input order by one goroutine, so
// the output does not depend on the number of workers.
type pdoc struct {
	Doc
	in     int    // index into Prepare's inputs (files, then built-in sources)
	text   string // NFC
	lang   string
	reason string // the filters', or "" to go on to dedup
	key    [32]byte
	sig    *Signature
	// twin: when analysed, an earlier document of the same key had passed
	// the filters, so this one is a duplicate (exact if that one was kept,
	// near if not) and was not encoded.
	twin        bool
	pair        bool  // a preference pair (ids chosen, rids rejected)
	bytes       int64 // text bytes, when Text is not kept (Merge)
	ids, rids   []int32
	mask, rmask []bool
	err         error // from encoding a conversation
}

// analyser does a worker's part of Prepare.
type analyser struct {
	filters    FilterConfig
	dd         *Deduper                // for signatures
	seen       func(key [32]byte) bool // an earlier document of key passed the filters
	tk         *tokenizer.Tokenizer
	trainRoles []string
	// encodes, when set, says which documents that pass the filters get
	// their signature and token ids (CheckPiece's sample); nil: all.
	encodes func(d *pdoc) bool
	buf     []byte
}

func (a *analyser) analyse(d *pdoc) {
	if !a.screen(d) {
		return
	}
	if a.seen(d.key) {
		d.twin = true
		return
	}
	if a.encodes == nil || a.encodes(d) {
		a.encode(d)
	}
}

// screen normalises d and puts it through the filters; for a document
// that passes it sets the dedup key (and leaves the text the key was made
// of in a.buf, for encode).
func (a *analyser) screen(d *pdoc) bool {
	d.text = norm.NFC.String(d.Text)
	if d.lang, d.reason = a.filters.Check(d.text); d.reason != "" {
		return false
	}
	d.key, a.buf = DupKey(d.text, a.buf)
	d.pair = d.Rejected != nil
	return true
}

// encode sets the signature and token ids of the document screen just
// passed.
func (a *analyser) encode(d *pdoc) {
	d.sig = a.dd.Signature(string(a.buf))
	switch {
	case d.Rejected != nil:
		if d.ids, d.mask, d.err = answerMasked(a.tk, nfc(d.Messages)); d.err == nil {
			d.rids, d.rmask, d.err = answerMasked(a.tk, nfc(d.Rejected))
		}
	case d.Messages != nil:
		d.ids, d.mask, d.err = a.tk.EncodeChatMasked(nfc(d.Messages), func(r string) bool { return slices.Contains(a.trainRoles, r) })
	default:
		d.ids = a.tk.AppendEncode(nil, d.text)
	}
}

// batch is a run of documents analysed by one worker.
type batch struct {
	docs []pdoc
	done chan struct{} // closed when analysed
}

// Batches close at this many documents or bytes of text.
const (
	batchDocs  = 1024
	batchBytes = 1 << 20
)

// runPipeline reads documents with read (which calls yield for each, in
// order), analyses them on threads workers, and calls consume for each in
// the order read. Memory is bounded: at most about 2×threads+3 batches are
// in flight. The first error — consume's, then read's — is returned after
// every goroutine has stopped.
func runPipeline(ctx context.Context, threads int, newAnalyser func() *analyser,
	read func(yield func(Doc, int) error) error, consume func(*pdoc) error) error {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *batch, threads)
	ordered := make(chan *batch, 2*threads+2)
	var wg sync.WaitGroup
	for range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := newAnalyser()
			for b := range work {
				for i := range b.docs {
					a.analyse(&b.docs[i])
				}
				close(b.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(work)
		cur, size := &batch{done: make(chan struct{})}, 0
		send := func() error {
			for _, ch := range []chan *batch{ordered, work} {
				select {
				case ch <- cur:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			cur, size = &batch{done: make(chan struct{})}, 0
			return nil
		}
		err := read(func(d Doc, in int) error {
			cur.docs = append(cur.docs, pdoc{Doc: d, in: in})
			if size += len(d.Text); size >= batchBytes || len(cur.docs) >= batchDocs {
				return send()
			}
			return ctx.Err()
		})
		if err == nil && len(cur.docs) > 0 {
			err = send()
		}
		readErr <- err
	}()
	var err error
	for b := range ordered {
		if err != nil {
			continue // drain, so the reader can stop
		}
		select {
		case <-b.done:
		case <-ctx.Done():
			err = ctx.Err()
			continue
		}
		for i := range b.docs {
			if err = consume(&b.docs[i]); err != nil {
				cancel()
				break
			}
		}
	}
	wg.Wait()
	if rerr := <-readErr; err == nil {
		err = rerr
	}
	return err
}
