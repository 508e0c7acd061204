"""Prompt segments to prompt embeddings: WebUI emphasis, BREAK, `::` weights and `--no`, through compel.

The parser hands over segments whose text still holds the WebUI emphasis users type
(`(word:1.3)`, `((word))`, `[word]`, `\\(`, `BREAK`). compel 2.x does the weighting and the
chunking of long prompts, but it reads its own syntax (`word++`, `(phrase)1.3`) and
would take `(word:1.3)` as plain text. So each segment is read by `generation.emphasis`
into weighted runs of text and handed to compel as its own prompt objects (`Fragment`s in a
`FlattenedPrompt`), never as a compel string: text like `C++` or a quoted word then
means what it says.

How the segments combine (docs/engine.md):
- positive segments are each encoded and mixed by their normalised weights
  (as compel's `Blend` does), so `space::2 ship` is two parts space to one part ship;
- negative segments (`--no red`, `dog::-1`) are mixed the same way, by the size of
  their weights, and become the negative side of classifier-free guidance;
- prompts longer than the text encoder's window are encoded in several windows
  (compel's chunking) and nothing is cut;
- `BREAK` starts a new window, as in the WebUI: the text before it is encoded alone and
  padded to whole windows, the text after starts afresh (compel's `Conjunction`, which
  encodes each part on its own and concatenates them along the token axis). The word
  itself is never encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.embeddings_provider import EmbeddingsProvider
from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

from .emphasis import (
    BREAK,
    BREAK_RUN,
    EMPHASIS_STEP,
    EmphasisError,
    emphasis_bounds,
    parse_emphasis,
    plain_text,
    split_windows,
)
from .prompt import Segment

__all__ = [  # the emphasis names are re-exported: older code imports them from here
    "BREAK", "BREAK_RUN", "EMPHASIS_STEP", "Conditioning", "EmphasisError", "PromptEncoder", "compel_prompt",
    "emphasis_bounds", "parse_emphasis", "plain_text",
]


def _flattened(runs: Sequence[tuple[str, float]]) -> FlattenedPrompt:
    return FlattenedPrompt([Fragment(piece, weight) for piece, weight in runs] or [Fragment("", 1.0)])


def compel_prompt(text: str) -> FlattenedPrompt | Conjunction:
    """One segment as compel's prompt object: its emphasis runs as weighted fragments.

    With BREAK, a `Conjunction` of one `FlattenedPrompt` per window group, so compel pads each
    group to whole windows and the next one starts a window of its own."""
    windows = split_windows(parse_emphasis(text))
    if len(windows) == 1:
        return _flattened(windows[0])
    return Conjunction([_flattened(runs) for runs in windows])


def _first_window_text(text: str) -> str:
    """The words of the first BREAK window: the WebUI takes SDXL's pooled embedding from its first window."""
    return " ".join(piece for piece, _ in split_windows(parse_emphasis(text))[0])


def _encode(compel: Compel, prompt: FlattenedPrompt | Conjunction) -> torch.Tensor:
    if isinstance(prompt, Conjunction):
        return compel.build_conditioning_tensor_for_conjunction(prompt)[0]
    return compel.build_conditioning_tensor_for_prompt_object(prompt)[0][0]


@dataclass(frozen=True)
class Conditioning:
    """What the pipeline takes instead of prompt strings (pooled ones only for SDXL)."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def repeat(self, count: int) -> Conditioning:
        """The same conditioning for each image of a batch."""
        def rep(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat(count, *([1] * (tensor.dim() - 1)))
        return Conditioning(rep(self.prompt_embeds), rep(self.negative_prompt_embeds),  # type: ignore[arg-type]
                            rep(self.pooled_prompt_embeds), rep(self.negative_pooled_prompt_embeds))

    def as_pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        kwargs = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return kwargs


def _encode_segments(compel: Compel, segments: Sequence[Segment]) -> torch.Tensor:
    """The segments mixed by their normalised weights, exactly as compel's `Blend` mixes prompts.

    Done here because a `Blend` takes only `FlattenedPrompt`s, and a segment with BREAK is a
    `Conjunction`: each is encoded, padded to the longest with compel's empty windows, and summed."""
    if not segments:
        return _encode(compel, _flattened([]))
    if len(segments) == 1:
        return _encode(compel, compel_prompt(segments[0].text))
    tensors = compel.pad_conditioning_tensors_to_same_length([_encode(compel, compel_prompt(s.text)) for s in segments])
    weights = [abs(s.weight) for s in segments]
    return EmbeddingsProvider.apply_embedding_weights(torch.cat(tensors).unsqueeze(0), weights, normalize=True)


class PromptEncoder:
    """Encodes segments with the pipeline's own text encoder(s); SD 1.5 and SDXL alike."""

    def __init__(self, pipe) -> None:
        self.is_sdxl = getattr(pipe, "text_encoder_2", None) is not None
        if self.is_sdxl:
            hidden = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            self._compels = [
                Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, returned_embeddings_type=hidden,
                       truncate_long_prompts=False),
                Compel(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2, returned_embeddings_type=hidden,
                       truncate_long_prompts=False, requires_pooled=True),
            ]
        else:
            self._compels = [Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                    truncate_long_prompts=False)]

    @torch.no_grad()
    def encode(self, segments: Sequence[Segment]) -> Conditioning:
        positive = [s for s in segments if s.weight > 0]
        negative = [s for s in segments if s.weight < 0]
        if not positive:  # an image prompt with no words; or only zero weights
            positive = [Segment("", 1.0)]
        per_encoder = []
        for compel in self._compels:
            pos = _encode_segments(compel, positive)
            neg = _encode_segments(compel, negative)
            per_encoder.append(compel.pad_conditioning_tensors_to_same_length([pos, neg]))
        if not self.is_sdxl:
            (pos, neg), = per_encoder
            return Conditioning(pos, neg)
        length = max(t.shape[1] for pair in per_encoder for t in pair)
        padded = [self._pad_to(compel, pair, length) for compel, pair in zip(self._compels, per_encoder, strict=True)]
        pos = torch.cat([pair[0] for pair in padded], dim=-1)
        neg = torch.cat([pair[1] for pair in padded], dim=-1)
        pooler = self._compels[1]
        return Conditioning(pos, neg, self._pooled(pooler, positive), self._pooled(pooler, negative))

    @staticmethod
    def _pad_to(compel: Compel, pair: list[torch.Tensor], length: int) -> list[torch.Tensor]:
        if pair[0].shape[1] == length:
            return pair
        empty = compel.build_conditioning_tensor("")
        if isinstance(empty, tuple):  # the encoder that also gives the pooled embedding
            empty = empty[0]
        repeats = (length - pair[0].shape[1]) // empty.shape[1]
        return [torch.cat([t, empty.repeat(1, repeats, 1)], dim=1) for t in pair]

    @staticmethod
    def _pooled(compel: Compel, segments: Sequence[Segment]) -> torch.Tensor:
        provider = compel.conditioning_provider
        if not segments:
            return provider.get_pooled_embeddings([""])
        texts = [_first_window_text(s.text) for s in segments]
        pooled = provider.get_pooled_embeddings(texts)
        weights = torch.tensor([abs(s.weight) for s in segments], dtype=pooled.dtype, device=pooled.device)
        return (pooled * (weights / weights.sum())[:, None]).sum(dim=0, keepdim=True)
