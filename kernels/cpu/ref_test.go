package cpu

import (
	"math"

	"github.com/fomnet/fomnet/kernels"
)

// Naive float64 references, written independently of the fast kernels: plain
// loops straight from the definitions.

func refMatmul(c0, a, b []float32, m, n, k int, ta, tb, acc bool) []float64 {
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			if acc {
				s = float64(c0[i*n+j])
			}
			for p := 0; p < k; p++ {
				var av, bv float32
				if ta {
					av = a[p*m+i]
				} else {
					av = a[i*k+p]
				}
				if tb {
					bv = b[j*k+p]
				} else {
					bv = b[p*n+j]
				}
				s += float64(av) * float64(bv)
			}
			out[i*n+j] = s
		}
	}
	return out
}

func refRMSNorm(x, w []float32, n, c int, eps float64) (y, rstd []float64) {
	y = make([]float64, n*c)
	rstd = make([]float64, n)
	for i := 0; i < n; i++ {
		var ss float64
		for j := 0; j < c; j++ {
			ss += float64(x[i*c+j]) * float64(x[i*c+j])
		}
		r := 1 / math.Sqrt(ss/float64(c)+eps)
		rstd[i] = r
		for j := 0; j < c; j++ {
			y[i*c+j] = float64(x[i*c+j]) * r * float64(w[j])
		}
	}
	return y, rstd
}

// refRMSNormBackward differentiates y_j = x_j r w_j by the chain rule written
// out per element pair (an O(C²) loop, independent of the fast formula).
func refRMSNormBackward(x, w, dy []float32, n, c int, eps float64) (dx, dw []float64) {
	dx = make([]float64, n*c)
	dw = make([]float64, c)
	for i := 0; i < n; i++ {
		var ss float64
		for j := 0; j < c; j++ {
			ss += float64(x[i*c+j]) * float64(x[i*c+j])
		}
		r := 1 / math.Sqrt(ss/float64(c)+eps)
		for j := 0; j < c; j++ {
			dw[j] += float64(dy[i*c+j]) * float64(x[i*c+j]) * r
			for l := 0; l < c; l++ {
				// ∂y_j/∂x_l = w_j (δ_jl r − x_j r³ x_l / C)
				d := -float64(x[i*c+j]) * r * r * r * float64(x[i*c+l]) / float64(c)
				if j == l {
					d += r
				}
				dx[i*c+l] += float64(dy[i*c+j]) * float64(w[j]) * d
			}
		}
	}
	return dx, dw
}

func refRoPE(x []float32, pos []int32, n, heads, hd int, theta float64, inverse bool) []float64 {
	y := make([]float64, len(x))
	half := hd / 2
	for i := 0; i < n; i++ {
		for h := 0; h < heads; h++ {
			base := (i*heads + h) * hd
			for j := 0; j < half; j++ {
				ang := float64(pos[i]) / math.Pow(theta, float64(2*j)/float64(hd))
				if inverse {
					ang = -ang
				}
				a, b := float64(x[base+j]), float64(x[base+j+half])
				y[base+j] = a*math.Cos(ang) - b*math.Sin(ang)
				y[base+j+half] = b*math.Cos(ang) + a*math.Sin(ang)
			}
		}
	}
	return y
}

// refAttention returns out and, given dout, dq, dk, dv, by explicit softmax
// and its Jacobian over the allowed keys only.
func refAttention(q, k, v, dout []float32, ds []int32, s kernels.AttnShape) (out, dq, dk, dv []float64) {
	out = make([]float64, len(q))
	dq = make([]float64, len(q))
	dk = make([]float64, len(k))
	dv = make([]float64, len(v))
	rep := s.NH / s.KVH
	scale := 1 / math.Sqrt(float64(s.HD))
	qi := func(b, t, h, d int) int { return ((b*s.T+t)*s.NH+h)*s.HD + d }
	ki := func(b, t, h, d int) int { return ((b*s.T+t)*s.KVH+h)*s.HD + d }
	for b := 0; b < s.B; b++ {
		for h := 0; h < s.NH; h++ {
			g := h / rep
			for t := 0; t < s.T; t++ {
				lo := int(ds[b*s.T+t])
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for u := lo; u <= t; u++ {
					var dot float64
					for d := 0; d < s.HD; d++ {
						dot += float64(q[qi(b, t, h, d)]) * float64(k[ki(b, u, g, d)])
					}
					sc[u] = dot * scale
					mx = math.Max(mx, sc[u])
				}
				var sum float64
				p := make([]float64, t+1)
				for u := lo; u <= t; u++ {
					p[u] = math.Exp(sc[u] - mx)
					sum += p[u]
				}
				for u := lo; u <= t; u++ {
					p[u] /= sum
					for d := 0; d < s.HD; d++ {
						out[qi(b, t, h, d)] += p[u] * float64(v[ki(b, u, g, d)])
					}
				}
				if dout == nil {
					continue
				}
				// dp_u = dout·v_u ; ds_u = p_u (dp_u − Σ_w p_w dp_w)
				dp := make([]float64, t+1)
				var avg float64
				for u := lo; u <= t; u++ {
					for d := 0; d < s.HD; d++ {
						dp[u] += float64(dout[qi(b, t, h, d)]) * float64(v[ki(b, u, g, d)])
						dv[ki(b, u, g, d)] += p[u] * float64(dout[qi(b, t, h, d)])
					}
					avg += p[u] * dp[u]
				}
				for u := lo; u <= t; u++ {
					dsu := p[u] * (dp[u] - avg) * scale
					for d := 0; d < s.HD; d++ {
						dq[qi(b, t, h, d)] += dsu * float64(k[ki(b, u, g, d)])
						dk[ki(b, u, g, d)] += dsu * float64(q[qi(b, t, h, d)])
					}
				}
			}
		}
	}
	return out, dq, dk, dv
}

func refXent(logits []float32, tg []int32, n, v int, dscale float64) (loss, grad []float64) {
	loss = make([]float64, n)
	grad = make([]float64, n*v)
	for i := 0; i < n; i++ {
		if tg[i] == kernels.IgnoreIndex {
			continue
		}
		mx := math.Inf(-1)
		for j := 0; j < v; j++ {
			mx = math.Max(mx, float64(logits[i*v+j]))
		}
		var sum float64
		for j := 0; j < v; j++ {
			sum += math.Exp(float64(logits[i*v+j]) - mx)
		}
		loss[i] = mx + math.Log(sum) - float64(logits[i*v+int(tg[i])])
		for j := 0; j < v; j++ {
			grad[i*v+j] = dscale * math.Exp(float64(logits[i*v+j])-mx) / sum
		}
		grad[i*v+int(tg[i])] -= dscale
	}
	return loss, grad
}

func refAdamW(p, g, m, v []float32, h kernels.AdamWStep) (pn, mn, vn []float64) {
	pn, mn, vn = make([]float64, len(p)), make([]float64, len(p)), make([]float64, len(p))
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	gs := float64(h.GradScale)
	if gs == 0 {
		gs = 1
	}
	for i := range p {
		gi := gs * float64(g[i])
		mn[i] = b1*float64(m[i]) + (1-b1)*gi
		vn[i] = b2*float64(v[i]) + (1-b2)*gi*gi
		mh := mn[i] / (1 - math.Pow(b1, float64(h.Step)))
		vh := vn[i] / (1 - math.Pow(b2, float64(h.Step)))
		pn[i] = float64(p[i]) - float64(h.LR)*(mh/(math.Sqrt(vh)+float64(h.Eps))+float64(h.WeightDecay)*float64(p[i]))
	}
	return pn, mn, vn
}
