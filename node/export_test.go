package node

import (
	"context"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Tamper makes p a lying reducer: f rewrites each aggregate it publishes.
func Tamper(p *Participant, f func(partition int, enc []byte) []byte) { p.tamper = f }

// Cheat makes p a dishonest worker from round from on: kind "steps"
// trains one inner step where the run says H; "shards" trains on other
// rows than the shards it lists; "seed" draws its batches with another
// peer's seed; "copy" sends, as its own, another member's contribution to
// the previous round scaled by 1.1.
func Cheat(p *Participant, kind string, from int) {
	switch kind {
	case "steps":
		p.cheat.job = func(r int, j *job) {
			if r >= from {
				j.steps = 1
			}
		}
	case "shards":
		p.cheat.job = func(r int, j *job) {
			if r >= from {
				// The rows of the dataset's first shard alone (of
				// its second, if it lists only the first).
				i := 0
				if len(j.shards) == 1 && j.shards[0] == p.man.Shards[0].CID {
					i = 1
				}
				j.data = p.shards[i]
			}
		}
	case "seed":
		p.cheat.job = func(r int, j *job) {
			for _, id := range p.members {
				if r >= from && id != p.self {
					j.author = id
					return
				}
			}
		}
	case "copy":
		p.cheat.encs = func(ctx context.Context, r int, encs [][]byte) [][]byte {
			if r < from {
				return encs
			}
			for _, i := range p.rec.includedIndices() {
				k, _ := p.rec.Contributions[i].Cid()
				c, err := p.localContribution(ctx, k)
				if err != nil || c.Peer == p.self.String() {
					continue
				}
				out := make([][]byte, len(encs))
				for pi, l := range c.Partitions {
					pk, _ := l.Cid()
					b, err := p.n.Store.Block(ctx, pk)
					if err != nil {
						return encs
					}
					d := make([]float32, p.parts[pi].Size)
					if p.codec.Decode(d, b.RawData()) != nil {
						return encs
					}
					for x := range d {
						d[x] *= 1.1
					}
					out[pi] = p.codec.Encode(nil, d)
				}
				return out
			}
			return encs
		}
	default:
		panic("node.Cheat: unknown kind " + kind)
	}
}

// Straggle makes p, an honest but slow worker, publish its contribution
// to round r only once release is closed.
func Straggle(p *Participant, r int, release <-chan struct{}) {
	p.cheat.straggle = func(ctx context.Context, round int) {
		if round == r {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
}

// FalseAccuser makes p publish a fraud proof against every other
// contribution its base included, whatever the re-execution gives.
func FalseAccuser(p *Participant) { p.cheat.accuse = true }

// ProofsAgainst returns the fraud proofs p holds, by the peer each
// convicts.
func ProofsAgainst(p *Participant) map[string]string {
	p.conv.mu.Lock()
	defer p.conv.mu.Unlock()
	out := map[string]string{}
	for id, k := range p.conv.proofs {
		out[id.String()] = k.String()
	}
	return out
}

// AskStatus asks peer pid where it stands in round r of run.
func AskStatus(ctx context.Context, n *Node, pid peer.ID, run cid.Cid, r int) (StatusResponse, error) {
	return n.askStatus(ctx, pid, run, r)
}

// TamperJob makes a job's node a liar: f rewrites each unit it makes
// before it stores and claims it.
func TamperJob(o *JobOptions, f func(k int, b []byte) []byte) { o.tamper = f }
