// The console page: status, API key, live and batch transcription, speech synthesis. Every control is a native,
// labelled element, so the page works by keyboard and with a screen reader.

import { call, Problem, storedKey, storeKey } from "./api.js";
import { LiveTranscription } from "./stream.js";
import { toSrt, toVtt } from "./subtitles.js";

const $ = (id) => document.getElementById(id);
const LANGUAGE = /^[a-z]{2,3}$/;
const READY_POLL_MS = 15000;
const LOADING_POLL_MS = 2000;

let live = null;

function key() {
  return $("api-key").value.trim();
}

function show(problem) {
  const box = $("message");
  if (!problem) {
    box.hidden = true;
    box.textContent = "";
    delete box.dataset.problem;
    return;
  }
  box.hidden = false;
  box.dataset.kind = "error";
  box.dataset.problem = problem.kind ?? "error";
  box.textContent = problem.message;
}

function problemOf(error) {
  return error instanceof Problem ? error : new Problem("error", String(error.message ?? error));
}

function setStatus(id, text) {
  $(id).textContent = text;
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(2)} s`;
}

function clock(value) {
  const minutes = Math.floor(value / 60);
  return `${minutes}:${(value % 60).toFixed(1).padStart(4, "0")}`;
}

// Readiness, region and model, from /readyz (open: no key needed); polled slowly once ready.
async function pollReadiness() {
  let delay = LOADING_POLL_MS;
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const body = await response.json();
    const readiness = $("status-readiness");
    readiness.textContent = body.status;
    readiness.dataset.state = response.ok ? "ready" : "down";
    if (response.ok) {
      setStatus("status-region", body.region);
      setStatus("status-model", body.model);
      setStatus("status-version", body.model_version);
      delay = READY_POLL_MS;
    }
  } catch {
    $("status-readiness").textContent = "unreachable";
    $("status-readiness").dataset.state = "down";
  }
  setTimeout(pollReadiness, delay);
}

function language() {
  const value = $("language").value.trim().toLowerCase();
  if (value && !LANGUAGE.test(value)) {
    throw new Problem("language", `Language ${JSON.stringify(value)} is not an ISO 639-1 code; use two or three letters such as en, or leave it empty to detect.`);
  }
  return value || null;
}

function utteranceItem(index) {
  let item = $("transcript").querySelector(`li[data-utterance="${index}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.utterance = index;
    item.dataset.partials = "0";
    item.append(Object.assign(document.createElement("span"), { className: "time" }), document.createElement("span"));
    $("transcript").append(item);
  }
  return item;
}

function onTranscript(message, stream) {
  const item = utteranceItem(message.utterance);
  if (item.classList.contains("final")) return;
  const now = performance.now();
  item.querySelector(".time").textContent = clock(message.start_s);
  item.lastChild.textContent = message.text;
  if (message.type === "partial") {
    if (item.dataset.partials === "0") setStatus("status-first-partial", seconds(now - stream.capturedAt(message.start_s)));
    item.dataset.partials = String(Number(item.dataset.partials) + 1);
    item.className = "partial";
    item.setAttribute("aria-busy", "true"); // screen readers wait for the final instead of reading every draft
    return;
  }
  item.className = "final";
  item.removeAttribute("aria-busy");
  if (!message.text) item.remove(); // an utterance the server heard no speech in
  setStatus("status-final-latency", seconds(now - stream.capturedAt(message.end_s)));
  const duration = message.end_s - message.start_s;
  if (duration > 0 && message.timings?.total !== undefined) setStatus("status-rtf", (message.timings.total / duration).toFixed(3));
  if (message.language) setStatus("status-language", message.language);
  setStatus("status-version", message.model_version);
}

function setStreaming(isStreaming, state) {
  // A button that is disabled while it has focus drops it to the page; hand it to the button that now acts.
  const focused = document.activeElement;
  $("record").disabled = isStreaming;
  $("stream-file").disabled = isStreaming || !$("audio-file").files.length;
  $("stop").disabled = !isStreaming;
  $("stream-state").textContent = state;
  $("stream-state").dataset.state = isStreaming ? "streaming" : "idle";
  if (focused?.disabled) (isStreaming ? $("stop") : $("record")).focus();
}

async function startStream(open, what) {
  show(null);
  let stream;
  try {
    stream = new LiveTranscription({
      key: key(),
      language: language(),
      onReady: (ready) => {
        setStatus("status-version", ready.model_version);
        setStreaming(true, `Streaming ${what} to ${ready.model} ${ready.model_version}.`);
      },
      onMessage: onTranscript,
      onEnd: (problem) => {
        live = null;
        setStreaming(false, problem ? "Stream ended with an error." : "Stream ended.");
        show(problem);
      },
    });
    live = stream;
    setStreaming(true, `Connecting (${what})…`);
    $("transcript").replaceChildren();
    await open(stream);
  } catch (error) {
    live = null;
    setStreaming(false, "Not streaming.");
    show(problemOf(error));
  }
}

function replaceDownload(anchor, text, type) {
  if (anchor.href) URL.revokeObjectURL(anchor.href);
  anchor.href = URL.createObjectURL(new Blob([text], { type }));
}

async function transcribeFile() {
  show(null);
  const file = $("audio-file").files[0];
  const button = $("batch-file");
  button.disabled = true;
  $("batch").hidden = true;
  try {
    const query = language() ? `?language=${language()}` : "";
    const response = await call(`/v1/asr${query}`, { key: key(), method: "POST", body: file });
    const result = await response.json();
    const rows = result.segments.map(({ start, end, text }) => {
      const row = document.createElement("tr");
      Object.assign(row.dataset, { start, end });
      for (const cell of [clock(start), clock(end), text.trim()]) row.append(Object.assign(document.createElement("td"), { textContent: cell }));
      return row;
    });
    $("segments").tBodies[0].replaceChildren(...rows);
    $("batch-summary").textContent = `${result.audio_seconds.toFixed(1)} s of audio, language ${result.language}, ${result.model} ${result.model_version}.`;
    replaceDownload($("download-srt"), toSrt(result.segments), "application/x-subrip");
    replaceDownload($("download-vtt"), toVtt(result.segments), "text/vtt");
    setStatus("status-language", result.language);
    setStatus("status-version", result.model_version);
    if (result.audio_seconds > 0) setStatus("status-rtf", (result.timings.total / result.audio_seconds).toFixed(3));
    $("batch").hidden = false;
    $("batch").dataset.state = "done";
  } catch (error) {
    show(problemOf(error));
  } finally {
    button.disabled = !$("audio-file").files.length;
  }
}

async function speak(event) {
  event.preventDefault();
  show(null);
  const button = $("speak");
  const cache = $("speak-cache");
  button.disabled = true;
  cache.textContent = "Synthesizing…";
  delete cache.dataset.cache;
  try {
    const request = { text: $("speak-text").value, format: $("speak-format").value, speed: Number($("speak-speed").value) };
    const voice = $("speak-voice").value.trim();
    if (voice) request.voice = voice;
    const response = await call("/v1/tts", {
      key: key(),
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const origin = response.headers.get("X-Speech-Cache");
    const audio = $("speak-audio");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(await response.blob());
    cache.dataset.cache = origin ?? "unknown";
    cache.textContent = origin === "hit" ? "Cache hit: served from the cache." : origin === "miss" ? "Cache miss: synthesized now." : "";
    audio.play().catch(() => {}); // a browser that blocks autoplay still shows the player
  } catch (error) {
    cache.textContent = "";
    show(problemOf(error));
  } finally {
    button.disabled = false;
  }
}

function init() {
  $("api-key").value = storedKey();
  $("api-key").addEventListener("input", () => storeKey(key()));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey(key());
  });
  $("key-clear").addEventListener("click", () => {
    $("api-key").value = "";
    storeKey("");
    $("api-key").focus();
  });
  $("record").addEventListener("click", () => startStream((stream) => stream.startMicrophone(), "the microphone"));
  $("stop").addEventListener("click", () => live?.stop());
  $("audio-file").addEventListener("change", () => {
    const hasFile = $("audio-file").files.length > 0;
    $("batch-file").disabled = !hasFile;
    $("stream-file").disabled = !hasFile || live !== null;
  });
  $("stream-file").addEventListener("click", () => {
    const file = $("audio-file").files[0];
    startStream((stream) => stream.startFile(file), file.name);
  });
  $("batch-file").addEventListener("click", transcribeFile);
  $("speak-form").addEventListener("submit", speak);
  document.body.dataset.console = "ready";
  pollReadiness();
}

init();
