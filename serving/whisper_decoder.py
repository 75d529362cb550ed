"""Greedy Whisper decoding on onnxruntime, several windows in lockstep, with Whisper's temperature fallback.

A decoder step on the CPU is bound by memory traffic: the fp32 weights, the vocabulary projection above all, are
read once per step however many rows share it, so windows decoded together cost far less each than alone.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from serving.decoding import BEST_OF, TEMPERATURES, Decoded, best_candidate, final_choice, log_softmax, strip_loop
from serving.model_dir import WhisperConfig, decoder_outputs


class _DecoderPass:
    """One decoding pass over ``rows`` sequences stepped together; the caches stay bound on the device."""

    def __init__(self, owner: WhisperDecoder, session: ort.InferenceSession, cross: dict, rows: int) -> None:
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
            self._binding.bind_ortvalue_input(name, value)
        self._offset = 0

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed ``tokens`` [rows, n] and return the logits [rows, vocab] of each row's last position."""
        binding, owner = self._binding, self._owner
        # Locals keep the arrays alive until the run: a binding does not own CPU inputs.
        token_ids, position = np.ascontiguousarray(tokens, np.int64), np.array(self._offset, np.int64)
        binding.bind_cpu_input("tokens", token_ids)
        binding.bind_cpu_input("offset", position)
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
        self._suppress = np.zeros(cfg.eot + 1, dtype=bool)
        self._suppress[[i for i in cfg.suppress_ids if i <= cfg.eot]] = True
        self._suppress_begin = self._suppress.copy()
        self._suppress_begin[[i for i in cfg.suppress_ids_begin if i <= cfg.eot]] = True
        self._language_ids = np.array(list(cfg.languages.values()))
        self._language_codes = list(cfg.languages)
        self._sot_prev = tokenizer.token_to_id("<|startofprev|>")
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

    def language_of(self, session: ort.InferenceSession, cross: dict[str, ort.OrtValue]) -> str:
        """The most likely language of the first window in ``cross``."""
        logits = _DecoderPass(self, session, cross, 1).step(np.array([[self.config.sot]]))
        return self._language_codes[int(np.argmax(logits[0, self._language_ids]))]

    def decode(
        self,
        session: ort.InferenceSession,
        cross: dict[str, ort.OrtValue],
        rows: int,
        language: str | None,
        temperature: float,
        rng: np.random.Generator | None,
        prompt: list[int] | None = None,
    ) -> tuple[list[Decoded], str]:
        """Decode ``rows`` windows together; ``language`` None takes the first row's most likely language.

        ``prompt`` (from :meth:`prompt_tokens`) precedes every row's start-of-transcript token.
        """
        cfg = self.config
        run = _DecoderPass(self, session, cross, rows)
        logits = run.step(np.tile([*(prompt or []), cfg.sot], (rows, 1)))
        no_speech = _softmax(logits)[:, cfg.no_speech]
        if not cfg.is_multilingual:
            language, prompt = "en", [cfg.no_timestamps]
        else:
            if language is None:
                language = self._language_codes[int(np.argmax(logits[0, self._language_ids]))]
            prompt = [cfg.languages[language], cfg.transcribe, cfg.no_timestamps]
        logits = run.step(np.tile(prompt, (rows, 1)))
        tokens: list[list[int]] = [[] for _ in range(rows)]
        sum_logprob = np.zeros(rows)
        loops = [False] * rows
        active = list(range(rows))
        feed = np.full((rows, 1), cfg.eot)
        for step in range(cfg.n_text_ctx // 2):
            text_logits = logits[active, : cfg.eot + 1]
            text_logits[:, self._suppress_begin if step == 0 else self._suppress] = -np.inf
            if temperature > 0 and rng is not None:
                picked = np.argmax(text_logits / temperature + rng.gumbel(size=text_logits.shape), axis=-1)
            else:
                picked = np.argmax(text_logits, axis=-1)
            logprobs = log_softmax(text_logits)
            still = []
            for i, row in enumerate(active):
                token = int(picked[i])
                sum_logprob[row] += float(logprobs[i, token])
                if token == cfg.eot:
                    continue
                tokens[row], loops[row] = strip_loop([*tokens[row], token])
                if not loops[row]:
                    still.append(row)
                    feed[row, 0] = token
            if not still:
                break
            feed[sorted(set(active) - set(still)), 0] = cfg.eot  # finished rows idle on end-of-text
            active = still
            logits = run.step(feed)
        decoded = [
            Decoded(
                tokens=tokens[row],
                sum_logprob=float(sum_logprob[row]),
                no_speech_prob=float(no_speech[row]),
                temperature=temperature,
                text=self._tokenizer.decode(tokens[row], skip_special_tokens=True).strip(),
                is_loop=loops[row],
            )
            for row in range(rows)
        ]
        return decoded, language

    def decode_hotter(
        self,
        session: ort.InferenceSession,
        cross: dict[str, ort.OrtValue],
        row: int,
        first: Decoded,
        language: str,
        rng: np.random.Generator,
        prompt: list[int] | None = None,
    ) -> Decoded:
        """Decode one window again at each temperature above the first attempt's, ``BEST_OF`` samples at once,
        until one passes."""
        samples = {
            name: ort.OrtValue.ortvalue_from_numpy(np.repeat(value.numpy()[row : row + 1], BEST_OF, 0), self.device)
            for name, value in cross.items()
        }
        attempts = [first]
        for temperature in (t for t in TEMPERATURES if t > first.temperature):
            candidates, _ = self.decode(session, samples, BEST_OF, language, temperature, rng, prompt)
            attempts.append(best_candidate(candidates))
            if not attempts[-1].needs_fallback:
                return attempts[-1]
        return final_choice(attempts)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
