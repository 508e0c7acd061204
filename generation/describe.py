"""/describe: four prompts that would make a picture like the one given.

The built-in model has its own captioner, trained on its world (generation/builtin/
captioner.py). For real models, an operator names a captioning model folder in
config.toml (BLIP through transformers, loaded from disk, nothing downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from PIL import Image

SUGGESTIONS = 4


class Describer(Protocol):
    def suggestions(self, image: Image.Image, count: int = SUGGESTIONS) -> list[str]: ...


class BlipDescriber:
    """A BLIP captioning model from a local folder; beam search gives several captions."""

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        self.model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = device

    def suggestions(self, image: Image.Image, count: int = SUGGESTIONS) -> list[str]:
        import torch

        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, num_beams=count * 2, num_return_sequences=count * 2,
                                         max_new_tokens=40)
        captions = [text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)]
        unique = [text for text in dict.fromkeys(captions) if text]
        return (unique + unique[:1] * count)[:count] if unique else ["a picture"] * count


def load_describer(source: str, device: str = "cpu") -> Describer:
    """"builtin" (the built-in model's captioner) or a BLIP folder."""
    if source == "builtin":
        from .builtin.captioner import Captioner

        return Captioner()
    if not Path(source).is_dir():
        raise FileNotFoundError(f"no captioning model folder at {source}")
    return BlipDescriber(source, device)
