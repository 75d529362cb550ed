// One live transcription: audio from the microphone or a file, through the PCM16 worklet, over WS /v1/asr/stream.
//
// Audio is captured before the socket is ready and held until it is, so the first word is never lost to the
// handshake; each frame's capture time is kept, which is what the latencies the page shows are measured from.

import { Problem, streamProblem, streamProtocols, streamUrl } from "./api.js";

const SAMPLE_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms
const FRAMES_PER_SECOND = SAMPLE_RATE / FRAME_SAMPLES;

export class LiveTranscription {
  // onMessage(message, stream) for every partial and final; onEnd(problem or null) once, when the stream is over.
  constructor({ key, language, onReady, onMessage, onEnd }) {
    this.key = key;
    this.language = language;
    this.onReady = onReady;
    this.onMessage = onMessage;
    this.onEnd = onEnd;
    this.captured = []; // performance.now() at each frame's capture
    this.pending = []; // frames captured before the socket was ready
    this.socket = null;
    this.isReady = false;
    this.isEnded = false;
    this.isStopping = false;
    this.lastError = "";
  }

  // Capture from the microphone until stop().
  async startMicrophone() {
    if (!navigator.mediaDevices) {
      throw new Problem("microphone", "This browser gives no microphone to a page served over plain HTTP from another host: open the console over HTTPS, or on localhost.");
    }
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (error) {
      throw new Problem("microphone", `The microphone could not be opened (${error.name}): allow this page to use it, or pick an audio file instead.`);
    }
    this.tracks = media.getTracks();
    await this.start((context) => new MediaStreamAudioSourceNode(context, { mediaStream: media }), false);
  }

  // Play `file` through the worklet in real time (and to the speakers); the stream stops when the file ends.
  async startFile(file) {
    const bytes = await file.arrayBuffer();
    await this.start(async (context) => {
      const buffer = await context.decodeAudioData(bytes);
      const source = new AudioBufferSourceNode(context, { buffer });
      source.onended = () => this.stop();
      this.fileSource = source;
      return source;
    }, true);
    this.fileSource.start();
  }

  async start(makeSource, isAudible) {
    this.context = new AudioContext();
    try {
      await this.context.audioWorklet.addModule(new URL("./pcm16-worklet.js", import.meta.url));
      const source = await makeSource(this.context);
      this.worklet = new AudioWorkletNode(this.context, "pcm16-frames", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: SAMPLE_RATE, frameSamples: FRAME_SAMPLES },
      });
      this.worklet.port.onmessage = ({ data }) => this.onWorklet(data);
      // A node's output must reach the destination for the graph to render it; through a muted gain.
      const muted = new GainNode(this.context, { gain: 0 });
      source.connect(this.worklet).connect(muted).connect(this.context.destination);
      if (isAudible) source.connect(this.context.destination);
      await this.context.resume();
    } catch (error) {
      this.releaseAudio();
      throw new Problem("audio", `The audio could not be opened: ${error.message}`);
    }
    this.connect();
  }

  connect() {
    const socket = new WebSocket(streamUrl(this.language), streamProtocols(this.key));
    socket.binaryType = "arraybuffer";
    socket.onmessage = ({ data }) => this.onServer(JSON.parse(data));
    socket.onclose = ({ code, reason }) => this.end(streamProblem(code, reason, this.lastError));
    this.socket = socket;
  }

  onServer(message) {
    if (message.type === "ready") {
      this.isReady = true;
      this.onReady?.(message);
      for (const frame of this.pending.splice(0)) this.socket.send(frame);
      if (this.isFlushed) this.socket.send(JSON.stringify({ type: "stop" }));
    } else if (message.type === "error") {
      this.lastError = message.detail;
    } else {
      this.onMessage(message, this);
    }
  }

  onWorklet(data) {
    if (data === "flushed") {
      this.isFlushed = true;
      this.releaseAudio();
      if (this.isReady) this.socket.send(JSON.stringify({ type: "stop" }));
      return;
    }
    this.captured.push(performance.now());
    if (this.isReady) this.socket.send(data);
    else this.pending.push(data);
  }

  // When the audio up to `seconds` into the stream had been captured.
  capturedAt(seconds) {
    const last = this.captured.length - 1;
    const index = Math.min(Math.max(Math.ceil(seconds * FRAMES_PER_SECOND) - 1, 0), last);
    return this.captured[index];
  }

  // End the input: the worklet hands over its last samples, then the server is told to finish; the finals of the
  // audio it has arrive before it closes.
  stop() {
    if (this.isStopping || this.isEnded) return;
    this.isStopping = true;
    for (const track of this.tracks ?? []) track.stop();
    this.worklet?.port.postMessage("flush");
  }

  end(problem) {
    if (this.isEnded) return;
    this.isEnded = true;
    this.releaseAudio();
    this.onEnd(problem);
  }

  releaseAudio() {
    for (const track of this.tracks ?? []) track.stop();
    if (this.context && this.context.state !== "closed") this.context.close();
  }
}
