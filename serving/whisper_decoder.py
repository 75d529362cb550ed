"""Greedy Whisper decoding on onnxruntime, several windows in lockstep, with Whisper's temperature fallback.

A decoder step on the CPU is bound by memory traffic: the fp32 weights, the vocabulary projection above all, are
read once per step however many rows share it, so windows decoded together cost far less each than alone.

With timestamps the model also predicts when each phrase starts and ends (Whisper's timestamp tokens, every
0.02 s of the window), under openai/whisper's rules: the text opens with a timestamp in its first second,
timestamps come in pairs that close one phrase and open the next, never go back, and are taken whenever the
model puts more probability on some timestamp than on any single word. They cost two tokens a phrase.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from serving.decoding import (
    BEST_OF,
    TEMPERATURES,
    TIME_PRECISION,
    Decoded,
    best_candidate,
    final_choice,
    log_softmax,
    strip_loop,
    timed_pieces,
)
from serving.model_dir import ModelError, WhisperConfig, decoder_outputs

# Timestamp tokens: <|0.00|> to <|30.00|> in steps of 0.02 s, right after <|notimestamps|>.
TIMESTAMP_TOKENS = 1501
# The first phrase starts within this many steps of 0.02 s (openai/whisper's max_initial_timestamp, 1 s).
MAX_INITIAL_TIMESTAMP = 50
# With timestamps, Whisper ends a window early when it believes its last phrase runs on into the next window (on
# the 10 min bench: 54 words lost, the last sentence of most full windows). The VAD knows where a window's speech
# ends, so end-of-text is refused until a phrase has closed within this many seconds of that end.
END_SLACK_S = 1.5


class Phrase(NamedTuple):
    """Text between two timestamps; a time is None where the model left it out (a phrase cut off by the end)."""

    start: float | None
    end: float | None
    text: str
    tokens: list[int]


# Each decoder layer's cross-attention K and V for a batch of windows, by input name: arrays in host memory, or
# OrtValues where the encoder left them (GPU memory under CUDA).
CrossKV = Mapping[str, ort.OrtValue | np.ndarray]


def on_host(value: ort.OrtValue | np.ndarray) -> np.ndarray:
    """``value`` as an array in host memory: itself, or a copy of an OrtValue."""
    return value if isinstance(value, np.ndarray) else value.numpy()


class DecoderPass:
    """One decoding pass over ``rows`` sequences stepped together; the caches stay bound on the device."""

    def __init__(self, owner: WhisperDecoder, session: ort.InferenceSession, cross: CrossKV, rows: int) -> None:
        cfg = owner.config
        self._owner, self._session = owner, session
        self._binding = session.io_binding()
        # On the CPU an OrtValue shares its array's memory: the empty caches must live as long as the pass.
        self._empty_k = np.zeros((rows, cfg.n_heads, cfg.head_dim, 0), np.float32)
        self._empty_v = np.zeros((rows, cfg.n_heads, 0, cfg.head_dim), np.float32)
        for name in owner.past_names:
            empty = self._empty_k if "_k_" in name else self._empty_v
            self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(empty, owner.device))
        for name, value in cross.items():
            if isinstance(value, np.ndarray):  # kept alive by self._cross while bound
                value = ort.OrtValue.ortvalue_from_numpy(value, owner.device)
            self._binding.bind_ortvalue_input(name, value)
        self._cross = cross
        self._owned: dict[str, np.ndarray] = {}  # the cross K/V once windows have left the pass
        self._count = 0
        self._offset = 0

    def keep(self, positions: list[int]) -> list[int]:
        """Keep only the windows at ``positions`` (of the current order) in the cross-attention, so windows that
        finished stop costing a step; returns the new order of the windows, as positions of the current order.

        Each window that stays behind a dropped one moves into its slot and the first ones are bound as a view,
        so a dropped window costs one window's copy. Array cross K/V are rearranged in place (the pass owns them
        from then on); OrtValues are copied to host memory first. The next step's ``source`` drops the dropped
        rows from the caches.
        """
        if not self._owned:
            self._owned = {name: on_host(value) for name, value in self._cross.items()}
            self._count = len(next(iter(self._owned.values())))
        count, order = len(positions), list(range(self._count))
        holes = sorted(set(range(count)) - set(positions))
        movers = sorted(p for p in positions if p >= count)
        for hole, mover in zip(holes, movers, strict=True):
            for array in self._owned.values():
                array[hole] = array[mover]
            order[hole] = mover
        self._count = count
        for name, array in self._owned.items():
            self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array[:count], self._owner.device))
        return order[:count]

    def step(self, tokens: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
        """Feed ``tokens`` [rows, n] and return the logits [rows, vocab] of each row's last position; row ``i``
        continues the past of row ``source[i]`` (default: its own)."""
        binding, owner = self._binding, self._owner
        # Locals keep the arrays alive until the run: a binding does not own CPU inputs.
        token_ids, position = np.ascontiguousarray(tokens, np.int64), np.array(self._offset, np.int64)
        rows = np.arange(len(token_ids), dtype=np.int64) if source is None else np.asarray(source, np.int64)
        binding.bind_cpu_input("tokens", token_ids)
        binding.bind_cpu_input("offset", position)
        binding.bind_cpu_input("beam_source", rows)
        binding.bind_output("logits")
        for name in owner.present_names:
            binding.bind_output(name, owner.device)
        self._session.run_with_iobinding(binding)
        logits, *presents = binding.get_outputs()
        for name, value in zip(owner.past_names, presents, strict=True):
            binding.bind_ortvalue_input(name, value)
        self._offset += tokens.shape[1]
        return logits.numpy()


class WhisperDecoder:
    """What decoding needs besides the session: token ids, suppression masks, the tokenizer and cache names.

    Stateless between calls, so one instance serves every thread; each call owns its pass and buffers.
    """

    def __init__(self, config: WhisperConfig, tokenizer: Tokenizer, device: str) -> None:
        self.config, self.device = config, device
        self._tokenizer = tokenizer
        cfg = config
        # Only text tokens may be sampled: everything after EOT is a special, language or timestamp token.
        suppress = np.zeros(cfg.eot + 1, dtype=bool)
        suppress[[i for i in cfg.suppress_ids if i <= cfg.eot]] = True
        suppress_begin = suppress.copy()
        suppress_begin[[i for i in cfg.suppress_ids_begin if i <= cfg.eot]] = True
        self.timestamp_begin = cfg.no_timestamps + 1
        # With timestamps the vocabulary sampled from runs on past the specials to the timestamp tokens.
        specials = np.ones(self.timestamp_begin - cfg.eot - 1, dtype=bool)
        stamps = np.zeros(TIMESTAMP_TOKENS, dtype=bool)
        # Added to the logits, -inf where a token may not be said: one pass that also copies them.
        self._forbidden, self._forbidden_begin, self._forbidden_timed, self._forbidden_timed_begin = (
            np.where(mask, -np.inf, 0.0).astype(np.float32)
            for mask in (
                suppress,
                suppress_begin,
                np.concatenate([suppress, specials, stamps]),
                np.concatenate([suppress_begin, specials, stamps]),
            )
        )
        self._language_ids = np.array(list(cfg.languages.values()))
        self._language_codes = list(cfg.languages)
        sot_prev = tokenizer.token_to_id("<|startofprev|>")
        if sot_prev is None:
            raise ModelError("the model's tokenizer.json has no <|startofprev|> token; export the model again")
        self._sot_prev = sot_prev
        # Each step's presents become the next step's pasts; encoder outputs feed the inputs of the same name.
        self.present_names = decoder_outputs(cfg.n_decoder_layers)[1:]
        self.past_names = [name.replace("present_", "past_") for name in self.present_names]

    def prompt_tokens(self, text: str | None) -> list[int]:
        """``<|startofprev|>`` and the tokens of ``text`` (its last ones when too long): what comes before the
        start-of-transcript token when decoding is conditioned on a prompt; nothing without one."""
        if not text or not text.strip():
            return []
        tokens = self._tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
        # Whisper keeps the prompt within half the text context, so the transcript keeps the other half.
        return [self._sot_prev, *tokens[-(self.config.n_text_ctx // 2 - 1) :]]

    def tokens_of(self, text: str) -> list[int]:
        """Text tokens of ``text`` as the model writes it after the prompt: with a leading space."""
        return self._tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids

    def language_of(self, session: ort.InferenceSession, cross: CrossKV) -> str:
        """The most likely language of the first window in ``cross``."""
        logits = DecoderPass(self, session, cross, 1).step(np.array([[self.config.sot]]))
        return self._language_codes[int(np.argmax(logits[0, self._language_ids]))]

    def decode(
        self,
        session: ort.InferenceSession,
        cross: CrossKV,
        rows: int,
        language: str | None,
        temperature: float,
        rng: np.random.Generator | None,
        prompt: list[int] | None = None,
        speech_ends: list[float] | None = None,
        prefix: list[int] | None = None,
    ) -> tuple[list[Decoded], str]:
        """Decode ``rows`` windows together; ``language`` None takes the first row's most likely language.

        ``prompt`` (from :meth:`prompt_tokens`) precedes every row's start-of-transcript token. ``speech_ends``,
        where each row's speech ends in seconds of its window, turns timestamps on: timestamp tokens interleave
        with the text (:meth:`phrases` reads them), and no row may stop before it has closed a phrase near its end.
        ``prefix`` tokens are forced as the start of every row's text and fed in the prompt's step, so a streaming
        draft whose first words are already settled pays one decoder run for them instead of one per token.
        """
        timestamps = speech_ends is not None
        run = DecoderPass(self, session, cross, rows)
        prefix = list(prefix or ())
        logits, no_speech, language = self.begin(run, rows, language, prompt, timestamps, prefix)
        tokens: list[list[int]] = [list(prefix) for _ in range(rows)]
        sum_logprob = np.zeros(rows)
        loops = [False] * rows
        active = list(range(rows))
        feed = np.full((rows, 1), self.config.eot)
        for step in range(self.config.n_text_ctx // 2):
            logprobs = self.allowed(
                logits[active],
                [tokens[row] for row in active],
                None if speech_ends is None else [speech_ends[row] for row in active],
                first=step == 0 and not prefix,
            )
            if temperature > 0 and rng is not None:
                # Log-probabilities differ from logits by a constant per row: the same distribution.
                picked = np.argmax(logprobs / temperature + rng.gumbel(size=logprobs.shape), axis=-1)
            else:
                picked = np.argmax(logprobs, axis=-1)
            still = []
            for i, row in enumerate(active):
                token = int(picked[i])
                sum_logprob[row] += float(logprobs[i, token])
                if token == self.config.eot:
                    continue
                tokens[row], loops[row] = strip_loop([*tokens[row], token])
                if not loops[row]:
                    still.append(row)
                    feed[row, 0] = token
            if not still:
                break
            feed[sorted(set(active) - set(still)), 0] = self.config.eot  # finished rows idle on end-of-text
            active = still
            logits = run.step(feed)
        decoded = [
            Decoded(
                tokens=tokens[row],
                sum_logprob=float(sum_logprob[row]),
                no_speech_prob=float(no_speech[row]),
                temperature=temperature,
                text=self.text_of(tokens[row]),
                is_loop=loops[row],
            )
            for row in range(rows)
        ]
        return decoded, language

    def begin(
        self,
        run: DecoderPass,
        rows: int,
        language: str | None,
        prompt: list[int] | None,
        timestamps: bool,
        prefix: list[int],
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Feed every row the prompt, start of transcript, language, task and ``prefix``: the logits for the first
        token to choose, each row's no-speech probability, and the language (the first row's most likely one
        when ``language`` is None)."""
        cfg = self.config
        logits = run.step(np.tile([*(prompt or []), cfg.sot], (rows, 1)))
        no_speech = _softmax(logits)[:, cfg.no_speech]
        if not cfg.is_multilingual:
            language, task = "en", []
        else:
            if language is None:
                language = self._language_codes[int(np.argmax(logits[0, self._language_ids]))]
            task = [cfg.languages[language], cfg.transcribe]
        rest = [*task, *([] if timestamps else [cfg.no_timestamps]), *prefix]
        if rest:  # an English-only model decoding timestamps has nothing to add after start-of-transcript
            logits = run.step(np.tile(rest, (rows, 1)))
        return logits, no_speech, language

    def allowed(
        self, logits: np.ndarray, histories: list[list[int]], speech_ends: list[float] | None, *, first: bool
    ) -> np.ndarray:
        """Each row's log-probabilities over what it may say next after ``histories`` (its tokens so far),
        forbidden tokens at -inf: specials, blanks first, and with ``speech_ends`` (timestamps on) the timestamp
        rules, the last of which (a timestamp is taken when all timestamps together outweigh every single word)
        runs over all rows at once."""
        if speech_ends is None:
            masked = logits[:, : self.config.eot + 1] + (self._forbidden_begin if first else self._forbidden)
            return log_softmax(masked, out=masked)
        masked = logits[:, : len(self._forbidden_timed)] + (
            self._forbidden_timed_begin if first else self._forbidden_timed
        )
        for row, (history, speech_end) in enumerate(zip(histories, speech_ends, strict=True)):
            self._apply_timestamp_rules(masked[row], history, speech_end)
        begin = self.timestamp_begin
        logprobs = log_softmax(masked, out=masked)
        best_word = logprobs[:, :begin].max(axis=1)
        stamps = logprobs[:, begin:]
        top_stamp = stamps.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):  # a row whose timestamps are all forbidden: -inf - -inf
            mass = top_stamp + np.log(np.exp(stamps - top_stamp).sum(axis=1, keepdims=True))
        timed = (mass[:, 0] > best_word) & np.array([bool(h) for h in histories])
        if timed.any():  # only timestamps remain: renormalize them among themselves
            logprobs[timed, :begin] = -np.inf
            logprobs[timed, begin:] -= mass[timed]
        return logprobs

    def phrases(self, decoded: Decoded) -> list[Phrase]:
        """The phrases of a window decoded with timestamps, timed in seconds of the window's audio."""
        phrases = [Phrase(start, end, self.text_of(tokens), tokens) for start, end, tokens in timed_pieces(
            decoded.tokens, self.timestamp_begin
        )]  # fmt: skip
        return [phrase for phrase in phrases if phrase.text]

    def text_of(self, tokens: list[int]) -> str:
        """The text of ``tokens``, timestamps and other specials left out."""
        return self._tokenizer.decode([t for t in tokens if t < self.config.eot], skip_special_tokens=True).strip()

    def _apply_timestamp_rules(self, logits: np.ndarray, sampled: list[int], speech_end: float) -> None:
        """Mask, in place, the tokens openai/whisper's timestamp rules forbid after ``sampled`` (but the one on
        probabilities, which :meth:`allowed` applies), and end-of-text until a phrase has closed near
        ``speech_end`` (``END_SLACK_S``)."""
        begin = self.timestamp_begin
        if not sampled:
            logits[:begin] = -np.inf
            logits[begin + MAX_INITIAL_TIMESTAMP + 1 :] = -np.inf
            return
        last_was_timestamp = sampled[-1] >= begin
        penultimate_was_timestamp = len(sampled) < 2 or sampled[-2] >= begin
        if last_was_timestamp:
            if penultimate_was_timestamp:
                logits[begin:] = -np.inf  # a pair just closed a phrase and opened the next: text must follow
            else:
                logits[: self.config.eot] = -np.inf  # a phrase just ended: the next one's start, or the end
        stamps = [token for token in sampled if token >= begin]
        if not stamps or (stamps[-1] - begin) * TIME_PRECISION < speech_end - END_SLACK_S:
            logits[self.config.eot] = -np.inf
        if stamps:
            # Never back in time; a phrase that just opened may not close at the same instant.
            floor = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
            logits[begin:floor] = -np.inf

    def decode_hotter(
        self,
        session: ort.InferenceSession,
        window: CrossKV,
        first: Decoded,
        language: str,
        rng: np.random.Generator,
        prompt: list[int] | None = None,
        speech_end: float | None = None,
    ) -> Decoded:
        """Decode one window (``window`` holds its cross K/V alone) again at each temperature above the first
        attempt's, ``BEST_OF`` samples at once (the graph shares the window's K/V among them), until one passes."""
        attempts = [first]
        for temperature in (t for t in TEMPERATURES if t > first.temperature):
            candidates, _ = self.decode(
                session,
                window,
                BEST_OF,
                language,
                temperature,
                rng,
                prompt,
                None if speech_end is None else [speech_end] * BEST_OF,
            )
            attempts.append(best_candidate(candidates))
            if not attempts[-1].needs_fallback:
                return attempts[-1]
        return final_choice(attempts)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
