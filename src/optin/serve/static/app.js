// optin serve: the page. Talks only to this server (see optin/serve/web.py for the routes).
"use strict";

const $ = (id) => document.getElementById(id);
let run = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function status(text) { $("status").textContent = text; }

async function jsonOf(response) {
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok || (body && body.error)) {
    throw new Error((body && body.error) || `The server answered ${response.status}.`);
  }
  return body;
}

async function loadRun() {
  try {
    run = await jsonOf(await fetch("api/run"));
  } catch (err) {
    showError(err.message);
    return;
  }
  $("run-line").textContent =
    `${run.title || run.experiment} (${run.folder}, seed ${run.seed}): the app may learn ` +
    `'${run.permitted}'; attackers try ${run.attacked.map((a) => `'${a}'`).join(" and ")}.`;
  const links = $("links");
  if (run.report) links.append(el("a", { href: run.report, target: "_blank" }, "report"));
  for (const f of run.figures) {
    links.append(el("a", { href: f, target: "_blank" }, f.split("/").pop()));
  }
  $("limits").textContent = `WAV, FLAC, MP3 or M4A; at most ${run.limits.max_seconds} s and ` +
    `${Math.round(run.limits.max_bytes / 1048576)} MB.`;
  const select = $("utterance");
  for (const u of run.utterances) {
    const labels = [run.permitted, ...run.attacked].map((c) => u[c]).join(", ");
    select.append(el("option", { value: u.id }, `${u.id} (${labels})`));
  }
  $("analyse-utterance").disabled = run.utterances.length === 0;
  $("live").disabled = !run.live;
  if (!run.live) $("live-stats").textContent = "The run has no opt-in obfuscator.";
}

async function analyse(request, what) {
  showError("");
  status(`Analysing ${what}…`);
  $("results").hidden = true;
  const start = performance.now();
  try {
    const analysis = await jsonOf(await request());
    render(analysis);
    const ms = Math.round(performance.now() - start);
    status(`Analysed ${what} (${analysis.seconds.toFixed(1)} s of audio) in ${ms} ms.`);
    document.body.dataset.analysis = analysis.id;
  } catch (err) {
    status("");
    showError(err.message);
  }
}

function probs(prediction) {
  return Object.entries(prediction.probabilities)
    .sort((a, b) => b[1] - a[1]).slice(0, 4)
    .map(([c, p]) => `${c} ${p.toFixed(2)}`).join(", ");
}

function guessCell(prediction, truth, kind) {
  if (!prediction) return el("td", {}, "–");
  const right = truth !== undefined && prediction.label === truth;
  return el("td", { "data-kind": kind, "data-label": prediction.label },
    el("span", { class: right ? "right" : "" }, prediction.label),
    el("div", { class: "probs" }, probs(prediction)));
}

function card(system, analysis, original) {
  const node = el("div", { class: "card", "data-system": system.key });
  node.append(el("h3", {}, system.label));
  if (system.makes_audio) {
    const base = `api/results/${analysis.id}`;
    node.append(el("audio", { controls: true, preload: "auto", src: `${base}/audio/${system.key}.wav` }));
    node.append(el("img", { alt: `spectrogram, ${system.label}`, src: `${base}/spectrogram/${system.key}.png` }));
  }
  if (system.note) node.append(el("p", { class: "note" }, system.note));
  if (system.target) {
    const line = el("p", { class: "target" }, `T (${run.permitted}): `,
      el("strong", { class: "t-label", "data-label": system.target.label }, system.target.label));
    if (system.agrees !== null) {
      line.append(" ", el("span", { class: `badge ${system.agrees ? "agree" : "differ"}` },
        system.agrees ? "agrees with the original" : "differs from the original"));
    }
    node.append(line, el("div", { class: "probs" }, probs(system.target)));
  }
  if (system.verification !== null) {
    node.append(el("p", { class: "verification", "data-score": system.verification },
      `speaker verification vs original: cosine ${system.verification.toFixed(3)}`));
  }
  for (const [attribute, guesses] of Object.entries(system.attacks)) {
    if (!guesses.length) continue;
    const truth = analysis.truth[attribute];
    const plain = system === original;  // on the original, the ignorant attacker is the
    const heads = plain ? ["original classifier"] : ["ignorant", "informed"];  // classifier
    const table = el("table", { "data-attribute": attribute },
      el("tr", {}, el("th", {}, attribute), ...heads.map((h) => el("th", {}, h)),
        el("th", {}, "true")));
    for (const g of guesses) {
      const cells = [guessCell(g.ignorant, truth, "ignorant")];
      if (!plain) cells.push(guessCell(g.informed, truth, "informed"));
      const row = el("tr", { "data-family": g.family }, el("td", {}, g.family), ...cells,
        el("td", {}, truth === undefined ? "unknown" : truth));
      table.append(row);
    }
    node.append(table);
  }
  return node;
}

function render(analysis) {
  const cards = $("cards");
  cards.replaceChildren();
  const original = analysis.systems[0];
  for (const system of analysis.systems) cards.append(card(system, analysis, original));
  const truth = Object.entries(analysis.truth).map(([k, v]) => `${k} ${v}`).join(", ");
  $("summary").textContent = `${analysis.source}: ${analysis.seconds.toFixed(2)} s` +
    (truth ? `; true labels: ${truth}` : "; true labels unknown (not from the corpus)") +
    `; analysed on the server in ${analysis.elapsed.toFixed(2)} s.`;
  $("results").hidden = false;
}

// ---------------------------------------------------------------- upload and test utterances
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  analyse(() => fetch("api/analyse", { method: "POST", body: file }), `'${file.name}'`);
});

$("analyse-utterance").addEventListener("click", () => {
  const id = $("utterance").value;
  analyse(() => fetch(`api/analyse/utterance/${encodeURIComponent(id)}`, { method: "POST" }),
    `test utterance '${id}'`);
});

// ---------------------------------------------------------------- recording (PCM -> WAV)
function wavBlob(chunks, rate) {
  const n = chunks.reduce((s, c) => s + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (o, s) => { for (let i = 0; i < s.length; i++) view.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true); text(36, "data");
  view.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++, o += 2) {
      view.setInt16(o, Math.max(-1, Math.min(1, c[i])) * 32767, true);
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

async function openMic(rate) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const ctx = rate ? new AudioContext({ sampleRate: rate }) : new AudioContext();
  const source = ctx.createMediaStreamSource(stream);
  const node = ctx.createScriptProcessor(2048, 1, 1);
  source.connect(node);
  node.connect(ctx.destination);
  const close = () => { node.disconnect(); source.disconnect(); stream.getTracks().forEach((t) => t.stop()); ctx.close(); };
  return { ctx, node, close };
}

let recording = null;
$("record").addEventListener("click", async () => {
  if (recording) {
    const { mic, chunks, timer } = recording;
    recording = null;
    clearInterval(timer);
    mic.close();
    $("record").textContent = "Start recording";
    $("record-time").textContent = "";
    const blob = wavBlob(chunks, mic.ctx.sampleRate);
    analyse(() => fetch("api/analyse", { method: "POST", body: blob }), "the recording");
    return;
  }
  showError("");
  try {
    const mic = await openMic(null);
    const chunks = [];
    mic.node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    const started = performance.now();
    const timer = setInterval(() => {
      $("record-time").textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
    }, 200);
    recording = { mic, chunks, timer };
    $("record").textContent = "Stop and analyse";
  } catch (err) {
    showError(`The microphone could not be opened (${err.message}).`);
  }
});

// ---------------------------------------------------------------- live mode
function resample(x, from, to) {
  if (from === to) return x;
  const n = Math.floor(x.length * to / from);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const p = i * from / to, k = Math.floor(p), f = p - k;
    out[i] = x[k] * (1 - f) + (k + 1 < x.length ? x[k + 1] : x[k]) * f;
  }
  return out;
}

let live = null;
$("live").addEventListener("click", async () => {
  if (live) { live.stop(); return; }
  showError("");
  let mic;
  try { mic = await openMic(16000); } catch (err) {
    showError(`The microphone could not be opened (${err.message}).`);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${location.pathname.replace(/[^/]*$/, "")}api/live`);
  socket.binaryType = "arraybuffer";
  const state = { rate: 16000, sent: 0, log: [], header: null, playAt: 0, delays: [], compute: [] };
  live = {
    stop() {
      mic.node.onaudioprocess = null;
      mic.close();
      if (socket.readyState === WebSocket.OPEN) socket.send("stop");
      live = null;
      $("live").textContent = "Start live";
    },
  };
  $("live").textContent = "Stop live";
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.error) { showError(msg.error); if (live) live.stop(); return; }
      if (msg.ready) { state.rate = msg.sample_rate; state.algorithmic = msg.latency_ms; return; }
      state.header = msg;
      state.compute.push(msg.compute_ms);
      return;
    }
    const samples = new Float32Array(event.data);
    const h = state.header;
    const outEnd = h.start_sample + samples.length;
    const entry = state.log.find((e) => e.end >= outEnd);
    if (entry) {
      const captured = entry.t - 1000 * (entry.end - outEnd) / state.rate;
      state.delays.push(performance.now() - captured);
    }
    const buffer = mic.ctx.createBuffer(1, samples.length, state.rate);
    buffer.copyToChannel(samples, 0);
    const player = mic.ctx.createBufferSource();
    player.buffer = buffer;
    player.connect(mic.ctx.destination);
    state.playAt = Math.max(state.playAt, mic.ctx.currentTime + 0.05);
    if (mic.ctx.state !== "closed") player.start(state.playAt);
    state.playAt += buffer.duration;
    const recent = (xs) => xs.slice(-20).sort((a, b) => a - b)[Math.floor(Math.min(xs.length, 20) / 2)];
    $("live-stats").textContent =
      `latency: measured ${Math.round(recent(state.delays) || 0)} ms from capture to protected audio ` +
      `(algorithmic ${Math.round(state.algorithmic)} ms; obfuscator ${recent(state.compute).toFixed(1)} ms ` +
      `per chunk), plus 50 ms playback buffer`;
    $("live-stats").dataset.measured = String(Math.round(recent(state.delays) || 0));
  };
  socket.onerror = () => showError("The live connection to the server failed.");
  socket.onopen = () => {
    mic.node.onaudioprocess = (e) => {
      const x = resample(new Float32Array(e.inputBuffer.getChannelData(0)), mic.ctx.sampleRate, 16000);
      state.sent += x.length;
      state.log.push({ end: state.sent, t: performance.now() });
      if (state.log.length > 400) state.log.shift();
      socket.send(x.buffer);
    };
  };
});

loadRun();
