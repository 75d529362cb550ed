// The AudioWorklet that turns the microphone (or a file being played) into what WS /v1/asr/stream takes: 16 kHz
// mono little-endian PCM16 in frames of `frameSamples` (20 ms). It runs on the audio thread, so capture never
// stalls behind the page. Downsampling low-pass filters first (a windowed sinc): decimating 48 kHz audio without it
// folds everything above 8 kHz back into the speech band, which costs Whisper words.

const HALF_TAPS = 16; // input samples each side of an output sample

class Pcm16Frames extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameSamples } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample; `sampleRate` is the context's
    this.cutoff = Math.min(1, targetRate / sampleRate) * 0.9; // of the input Nyquist, below the output's
    this.position = HALF_TAPS; // input index of the next output sample; the first ones see zeros before them
    // Int16Array is in the platform's byte order: little-endian on every platform browsers run on.
    this.frame = new Int16Array(frameSamples);
    this.filled = 0;
    this.isFlushed = false;
    this.input = new Float32Array(HALF_TAPS);
    this.port.onmessage = ({ data }) => {
      if (data === "flush") this.flush();
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (this.isFlushed) return false;
    if (channels.length === 0) return true;
    this.append(mono(channels));
    this.resample();
    return true;
  }

  append(samples) {
    const joined = new Float32Array(this.input.length + samples.length);
    joined.set(this.input);
    joined.set(samples, this.input.length);
    this.input = joined;
  }

  resample() {
    while (Math.floor(this.position) + HALF_TAPS < this.input.length) {
      this.emit(this.sampleAt(this.position));
      this.position += this.step;
    }
    const keep = Math.floor(this.position) - HALF_TAPS + 1;
    if (keep > 0) {
      this.input = this.input.slice(keep);
      this.position -= keep;
    }
  }

  sampleAt(position) {
    const centre = Math.floor(position);
    let sum = 0;
    let weights = 0;
    for (let index = centre - HALF_TAPS + 1; index <= centre + HALF_TAPS; index++) {
      const distance = index - position;
      const weight = sinc(this.cutoff * distance) * hann(distance / (HALF_TAPS + 1));
      sum += weight * this.input[index];
      weights += weight;
    }
    return weights ? sum / weights : 0;
  }

  emit(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = Math.round(clipped * 32767);
    if (this.filled === this.frame.length) {
      const full = this.frame.buffer;
      this.frame = new Int16Array(this.frame.length);
      this.filled = 0;
      this.port.postMessage(full, [full]);
    }
  }

  // The last part-frame, then "flushed": the page sends {"type": "stop"} only after every sample it carried.
  flush() {
    if (this.filled > 0) {
      const rest = this.frame.slice(0, this.filled).buffer;
      this.port.postMessage(rest, [rest]);
    }
    this.isFlushed = true;
    this.port.postMessage("flushed");
  }
}

function mono(channels) {
  if (channels.length === 1) return channels[0];
  const mixed = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mixed.length; i++) mixed[i] += channel[i] / channels.length;
  }
  return mixed;
}

function sinc(x) {
  return x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
}

function hann(x) {
  return Math.abs(x) >= 1 ? 0 : 0.5 + 0.5 * Math.cos(Math.PI * x);
}

registerProcessor("pcm16-frames", Pcm16Frames);
