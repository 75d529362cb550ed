// Subtitles from the batch endpoint's segments ({start, end, text}, seconds): SubRip (SRT) and WebVTT, made in
// the page so a transcript downloads without another request.

export function toSrt(segments) {
  return cues(segments)
    .map(({ start, end, text }, index) => `${index + 1}\n${timestamp(start, ",")} --> ${timestamp(end, ",")}\n${text}\n`)
    .join("\n");
}

export function toVtt(segments) {
  const body = cues(segments)
    .map(({ start, end, text }) => `${timestamp(start, ".")} --> ${timestamp(end, ".")}\n${text}\n`)
    .join("\n");
  return `WEBVTT\n\n${body}`;
}

// hh:mm:ss,mmm (SRT) or hh:mm:ss.mmm (WebVTT); whole milliseconds, so rounding never yields ",1000".
export function timestamp(seconds, separator) {
  const total = Math.max(0, Math.round(seconds * 1000));
  const ms = total % 1000;
  const s = Math.floor(total / 1000) % 60;
  const m = Math.floor(total / 60000) % 60;
  const h = Math.floor(total / 3600000);
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${separator}${pad(ms, 3)}`;
}

// A cue's text may not hold a blank line (it would end the cue) and WebVTT reserves "-->"; segments without text
// (silence) make no cue.
function cues(segments) {
  return segments
    .map(({ start, end, text }) => ({ start, end, text: text.trim().replace(/\s*\n\s*/g, " ").replaceAll("-->", "->") }))
    .filter(({ text }) => text.length > 0);
}

function pad(value, width) {
  return String(value).padStart(width, "0");
}
