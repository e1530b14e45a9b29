// fomnet's dashboard: reads the daemon's /ui/api/ (the only origin this
// page may reach) every two seconds and redraws what changed. Charts come
// drawn from the daemon as SVG; everything else is built with textContent.
"use strict";

const POLL_MS = 2000;
let timer = null;
let shown = "";

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

async function get(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function live(ok, text) {
  const l = document.getElementById("live");
  l.textContent = text;
  l.className = ok ? "live" : "live stale";
}

function short(cid) { return cid ? cid.slice(0, 8) + "…" + cid.slice(-6) : ""; }

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function table(head, rows, attrs) {
  return el("table", attrs || {}, el("thead", {}, el("tr", {}, head.map(h => el("th", {}, h)))),
    el("tbody", {}, rows));
}

// show replaces the page when what it draws from changed.
function show(key, build) {
  if (key === shown) return;
  shown = key;
  const app = document.getElementById("app");
  app.replaceChildren(...build().filter(x => x));
}

async function poll(load) {
  clearTimeout(timer);
  try {
    await load();
    live(true, "live · " + new Date().toLocaleTimeString());
  } catch (e) {
    live(false, "not reachable: " + e.message);
  }
  timer = setTimeout(() => poll(load), POLL_MS);
}

async function home() {
  const [node, runs] = await Promise.all([get("api/node"), get("api/runs")]);
  show(JSON.stringify([node, runs]), () => [
    el("h1", {}, "Node"),
    facts([
      ["peer ID", el("span", { class: "cid" }, node.peer_id)],
      ["reachability", node.reachability || "offline"],
      ["addresses", el("div", {}, node.addrs.map(a => el("div", { class: "cid" }, a)))],
      ["peers connected", node.peers.length],
      ["store", `${node.store_blocks} blocks, ${bytes(node.store_bytes)}`],
      ["bitswap", `received ${bytes(node.bitswap.bytes_received || 0)}, sent ${bytes(node.bitswap.bytes_sent || 0)}`],
    ]),
    el("h2", {}, "Runs"),
    runs.length === 0 ? el("p", { class: "muted" }, "No runs here yet: join one, or follow one with `fomnet mirror --follow RUN-ID`.") :
      table(["run", "name", "stage", "round", "checkpoint", ""], runs.map(r => el("tr", {},
        el("td", {}, el("a", { href: "#/run/" + r.run, class: "cid" }, short(r.run))),
        el("td", {}, r.name), el("td", {}, r.stage),
        el("td", { class: "num" }, `${Math.max(r.settled, 0)} / ${r.rounds}`),
        el("td", { class: "cid" }, short(r.checkpoint)),
        el("td", {}, r.following ? "following" : "")))),
    el("h2", {}, "Peers"),
    table(["peer", "addresses"], node.peers.map(p => el("tr", {},
      el("td", { class: "cid" }, p.peer_id), el("td", { class: "cid" }, p.addrs.join(" "))))),
    el("h2", {}, "Pins"),
    table(["name", "CID"], node.pins.map(p => el("tr", {}, el("td", {}, p.name), el("td", { class: "cid" }, p.cid)))),
  ]);
}

function chart(svg) {
  const box = el("div", { class: "chart-box" });
  box.innerHTML = svg; // drawn by the daemon (internal/svgchart), every text escaped there
  return box;
}

function contributions(p) {
  return p.contributions.map(c => el("tr", {},
    el("td", { class: "num" }, p.round),
    el("td", { class: "cid", title: c.cid }, short(c.cid)),
    el("td", { class: "cid", title: c.author || "" }, c.author ? short(c.author) : "(block not here)"),
    el("td", { class: c.included ? "ok" : "bad" }, c.included ? "included" :
      "left out: " + Object.entries(c.rejected || {}).map(([part, why]) => `partition ${part}: ${why}`).join(", ")),
    el("td", { class: "num" }, c.bytes ? bytes(c.bytes) : "")));
}

async function run(id) {
  const v = await get("api/run/" + id);
  show(JSON.stringify(v), () => {
    const newest = [...v.points].reverse();
    return [
      el("h1", {}, `${v.name} `, el("span", { class: "muted" }, `(${v.stage})`)),
      facts([
        ["run", el("span", { class: "cid" }, v.run)],
        ["round", el("span", { id: "settled" }, `${Math.max(v.settled, 0)} of ${v.rounds}`)],
        ["model", `${v.params.toLocaleString()} parameters; H=${v.h} inner steps of ${v.batch}×${v.seq} tokens; ${v.codec} codec`],
        ["dataset", el("span", { class: "cid" }, v.dataset)],
        ["starts from", !v.from ? "its genesis" : v.from_run ?
          el("span", {}, el("span", { class: "cid" }, v.from), " — round " + v.from_round + " of run ", el("a", { href: "#/run/" + v.from_run, class: "cid" }, short(v.from_run))) :
          el("span", { class: "cid" }, v.from)],
      ]),
      v.val_note ? el("p", { class: "note", id: "val-note" }, v.val_note) : null,
      el("div", { class: "charts" }, chart(v.charts.loss), chart(v.charts.tokens), chart(v.charts.bytes), chart(v.charts.phases)),
      el("h2", {}, "Checkpoints"),
      table(["round", "checkpoint", "settled here", "tokens", "contributions", "fetch / export"], newest.map(p => el("tr", { "data-round": p.round },
        el("td", { class: "num" }, p.round),
        el("td", { class: "cid" }, p.checkpoint),
        el("td", {}, new Date(p.settled_at).toLocaleString()),
        el("td", { class: "num" }, p.tokens.toLocaleString()),
        el("td", { class: "num" }, `${p.contributions.filter(c => c.included).length} / ${p.contributions.length}`),
        el("td", {}, el("code", {}, `fomnet get ${p.checkpoint} -o round-${p.round}`), el("br"),
          el("code", {}, `fomnet export ${p.checkpoint} --format hf -o hf-${p.round}`)))), { id: "checkpoints" }),
      el("h2", {}, "Contributions"),
      table(["round", "contribution", "author", "", "bytes"], newest.map(contributions)),
      el("h2", {}, "Excluded peers"),
      el("p", {}, newest.some(p => p.excluded) ? newest.filter(p => p.excluded).map(p => `round ${p.round}: ${p.excluded.join(", ")}`).join("; ") : "none"),
    ];
  });
}

function route() {
  shown = "";
  const m = location.hash.match(/^#\/run\/([a-z0-9]+)$/);
  poll(m ? () => run(m[1]) : home);
}

window.addEventListener("hashchange", route);
route();
