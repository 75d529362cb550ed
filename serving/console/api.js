// How the page talks to the server: the API key (this tab's sessionStorage only), HTTP requests, the stream's
// subprotocols, and a plain-language problem for every error status and close code the server documents.

const KEY_ITEM = "speech-console.api-key";
// contract/service.py: STREAM_SUBPROTOCOL and STREAM_KEY_SUBPROTOCOL_PREFIX.
const STREAM_SUBPROTOCOL = "speech.v1";
const KEY_SUBPROTOCOL_PREFIX = "speech.key.";

export const STREAM_PATH = "/v1/asr/stream";

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) ?? "";
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

// A browser cannot set headers on a WebSocket, so the key travels as a subprotocol: never in the URL, where it
// would land in access logs and the browser history.
export function streamProtocols(key) {
  if (!key) return [STREAM_SUBPROTOCOL];
  const bytes = new TextEncoder().encode(key);
  const base64 = btoa(String.fromCharCode(...bytes));
  const base64url = base64.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  return [STREAM_SUBPROTOCOL, KEY_SUBPROTOCOL_PREFIX + base64url];
}

export function streamUrl(language) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = language ? `?language=${encodeURIComponent(language)}` : "";
  return `${scheme}//${location.host}${STREAM_PATH}${query}`;
}

export class Problem extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

// fetch with the key; a non-2xx answer becomes a Problem that says what went wrong and what to do.
export async function call(path, { key, headers = {}, ...options } = {}) {
  const auth = key ? { Authorization: `Bearer ${key}` } : {};
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...headers, ...auth } });
  } catch (error) {
    throw new Problem("network", `The server could not be reached (${error.message}). Is it running?`);
  }
  if (response.ok) return response;
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the status alone explains it
  }
  throw httpProblem(response.status, body);
}

export function httpProblem(status, body) {
  const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? "");
  switch (status) {
    case 401:
      return new Problem("auth", `Authentication failed: the server refused the API key. Enter a valid key above. (${detail})`);
    case 421:
      return new Problem("residency", `Data residency: this key's data must be processed in its home jurisdiction; use ${body.endpoint ?? "its regional endpoint"}. (${detail})`);
    case 400:
    case 413:
    case 415:
    case 422:
      return new Problem("bad-audio", `The server could not use this audio: ${detail}`);
    case 404:
      return new Problem("missing", `This server does not offer that: ${detail}`);
    case 408:
      return new Problem("timeout", `The upload was too slow: ${detail}`);
    case 503:
      return new Problem("busy", `The server is busy, loading or shutting down; try again shortly. (${detail})`);
    default:
      return new Problem("server", `The server answered ${status}: ${detail || "no detail"}`);
  }
}

// Why a stream ended, from its close code and reason and the `error` message sent just before; null when it
// ended normally.
export function streamProblem(code, reason, detail) {
  const why = detail || reason || "no reason given";
  if (code === 1000) return null;
  if (code === 1008 && reason === "missing or invalid API key") {
    return new Problem("auth", `Authentication failed: the server refused the API key. Enter a valid key above. (${why})`);
  }
  if (code === 1008 && reason.startsWith("data of ")) {
    return new Problem("residency", `Data residency: this key's data must be processed in its home jurisdiction. (${why})`);
  }
  if (code === 1013 && reason.startsWith("too many streams")) {
    return new Problem("too-many-sessions", `Too many streams: the server is at its limit of concurrent streams; try again in a moment. (${why})`);
  }
  switch (code) {
    case 1001:
      return new Problem("going-away", `The server is shutting down; start the stream again. (${why})`);
    case 1003:
    case 1009:
      return new Problem("bad-audio", `The server could not use the audio sent: ${why}`);
    case 1008:
      return new Problem("policy", `The server ended the stream: ${why}`);
    case 1011:
      return new Problem("server", `The server failed while transcribing: ${why}`);
    case 1013:
      return new Problem("busy", `The server is busy, loading or shutting down; try again shortly. (${why})`);
    default:
      return new Problem("network", `The connection to the server was lost (close code ${code}). ${reason}`.trim());
  }
}
