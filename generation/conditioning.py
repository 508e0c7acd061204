"""Prompt segments to prompt embeddings: WebUI emphasis, `::` weights and `--no`, through compel.

The parser hands over segments whose text still holds the WebUI emphasis users type
(`(word:1.3)`, `((word))`, `[word]`, `\\(`). compel 2.x does the weighting and the
chunking of long prompts, but it reads its own syntax (`word++`, `(phrase)1.3`) and
would take `(word:1.3)` as plain text. So each segment is read here into weighted
runs of text and handed to compel as its own prompt objects (`Fragment`s in a
`FlattenedPrompt`), never as a compel string: text like `C++` or a quoted word then
means what it says.

How the segments combine (docs/engine.md):
- positive segments are each encoded and mixed by their normalised weights
  (compel's `Blend`), so `space::2 ship` is two parts space to one part ship;
- negative segments (`--no red`, `dog::-1`) are mixed the same way, by the size of
  their weights, and become the negative side of classifier-free guidance;
- prompts longer than the text encoder's window are encoded in several windows
  (compel's chunking) and nothing is cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.prompt_parser import Blend, FlattenedPrompt, Fragment

from .prompt import Segment

EMPHASIS_STEP = 1.1  # the WebUI's factor for one pair of () (and 1/1.1 for [])

_EMPHASIS_TOKEN = re.compile(
    r"""
    \\[\\()\[\]]                          # an escaped bracket or backslash: literal
    | :\s*(?P<weight>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)   # ":1.3)" closes an explicit weight
    | [()\[\]]                            # brackets
    | [^\\()\[\]:]+                       # plain text
    | [:\\]                               # a lone colon or backslash: literal
    """,
    re.VERBOSE,
)


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split WebUI-emphasised text into (text, weight) runs, the way AUTOMATIC1111 reads it.

    `(a)` x1.1, `((a))` x1.21, `(a:1.3)` x1.3, `[a]` /1.1, `\\(` a literal bracket.
    A bracket never closed still counts (as in the WebUI); a closer with no opener is text.
    """
    runs: list[list] = []  # [text, weight]
    openers: list[tuple[str, int]] = []  # (bracket, index of the first run inside it)

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    for match in _EMPHASIS_TOKEN.finditer(text):
        token = match.group(0)
        if token.startswith("\\") and len(token) == 2:
            runs.append([token[1], 1.0])
        elif match.group("weight") is not None and openers and openers[-1][0] == "(":
            scale(openers.pop()[1], float(match.group("weight")))
        elif token in "([" and len(token) == 1:
            openers.append((token, len(runs)))
        elif token == ")" and openers and openers[-1][0] == "(":
            scale(openers.pop()[1], EMPHASIS_STEP)
        elif token == "]" and openers and openers[-1][0] == "[":
            scale(openers.pop()[1], 1 / EMPHASIS_STEP)
        else:
            runs.append([token, 1.0])
    for bracket, start in reversed(openers):
        scale(start, EMPHASIS_STEP if bracket == "(" else 1 / EMPHASIS_STEP)

    merged: list[tuple[str, float]] = []
    for piece, weight in runs:
        if merged and abs(merged[-1][1] - weight) < 1e-9:
            merged[-1] = (merged[-1][0] + piece, weight)
        else:
            merged.append((piece, weight))
    cleaned = [(" ".join(piece.split()), round(weight, 6)) for piece, weight in merged]
    return [(piece, weight) for piece, weight in cleaned if piece] or [("", 1.0)]


def plain_text(text: str) -> str:
    """The words without emphasis marks (for pooled embeddings and the infotext's readers)."""
    return " ".join(piece for piece, _ in parse_emphasis(text)).strip()


def compel_prompt(text: str) -> FlattenedPrompt:
    """One segment as compel's prompt object: its emphasis runs as weighted fragments."""
    return FlattenedPrompt([Fragment(piece, weight) for piece, weight in parse_emphasis(text)])


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


def _blend(segments: Sequence[Segment]) -> Blend | FlattenedPrompt:
    if not segments:
        return FlattenedPrompt([Fragment("", 1.0)])
    if len(segments) == 1:
        return compel_prompt(segments[0].text)
    return Blend([compel_prompt(s.text) for s in segments], [abs(s.weight) for s in segments])


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
            pos = compel.build_conditioning_tensor_for_prompt_object(_blend(positive))[0][0]
            neg = compel.build_conditioning_tensor_for_prompt_object(_blend(negative))[0][0]
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
        texts = [plain_text(s.text) for s in segments]
        pooled = provider.get_pooled_embeddings(texts)
        weights = torch.tensor([abs(s.weight) for s in segments], dtype=pooled.dtype, device=pooled.device)
        return (pooled * (weights / weights.sum())[:, None]).sum(dim=0, keepdim=True)
