#!/usr/bin/env bash
# llamacpp-check.sh CHECKPOINT [PROMPT...]
#
# Checks that llama.cpp loads fomnet's GGUF export and continues prompts as
# fomnet does. It exports CHECKPOINT (a checkpoint directory with
# tokenizer.json) as GGUF in f32, f16, bf16 and q8_0, installs
# node-llama-cpp (prebuilt llama.cpp for Node.js, from the npm registry)
# into a temporary directory, and for each prompt compares fomnet's greedy
# token ids (`fomnet generate --raw --temperature 0`) with llama.cpp's,
# given the same prompt ids. Needs Go, Node.js ≥ 20, npm and the npm
# registry, so CI does not run it; run it after changing the exporter.
#
# Greedy decoding can part at a near-tie (two tokens whose probabilities
# agree to 1e-5): the script then reports where, not a failure of the
# format.
set -euo pipefail
ck=${1:?usage: llamacpp-check.sh CHECKPOINT [PROMPT...]}
shift
prompts=("$@")
[ ${#prompts[@]} -gt 0 ] || prompts=("Sam: Hello, Hana." "민수: 안녕하세요, 지영 씨." "오늘 아침에는" "The library was" "문제: 12 더하기 7은")
n=24
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && go build -o "$work/fomnet" ./cmd/fomnet)
(cd "$work" && npm init -y >/dev/null && npm install --silent node-llama-cpp >/dev/null 2>&1)
cat > "$work/greedy.mjs" <<'JS'
import {getLlama} from "node-llama-cpp";
const [modelPath, idsJson, n] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 256});
const out = [];
for await (const tok of context.getSequence().evaluate(JSON.parse(idsJson), {temperature: 0})) {
  if (model.tokens.eos === tok) break;
  out.push(tok);
  if (out.length >= Number(n)) break;
}
console.log(JSON.stringify(out));
JS
fail=0
for dtype in f32 f16 bf16 q8_0; do
  "$work/fomnet" export "$ck" --format gguf --dtype "$dtype" -o "$work/model-$dtype.gguf" >/dev/null
  for p in "${prompts[@]}"; do
    js=$("$work/fomnet" generate "$ck" --prompt "$p" --raw --temperature 0 --max-tokens "$n" --json)
    ids=$(printf '%s' "$js" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);console.log(JSON.stringify(j.prompt_ids)+" "+JSON.stringify(j.ids))})')
    want=${ids#* }
    count=$(node -e "console.log(JSON.parse(process.argv[1]).length)" "$want")
    got=$(cd "$work" && node greedy.mjs "model-$dtype.gguf" "${ids%% *}" "$count" | tr -d ' ')
    got=$(node -e "const g=JSON.parse(process.argv[1]),w=JSON.parse(process.argv[2]);console.log(JSON.stringify(g.slice(0,w.length)))" "$got" "$want")
    if [ "$got" = "$want" ]; then
      echo "$dtype  same $count ids   $p"
    else
      at=$(node -e "const g=JSON.parse(process.argv[1]),w=JSON.parse(process.argv[2]);let i=0;while(i<w.length&&g[i]===w[i])i++;console.log(i)" "$got" "$want")
      echo "$dtype  DIFFER from token $at   $p"
      fail=1
    fi
  done
done
exit $fail
