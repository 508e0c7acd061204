"""diffusers' and transformers' own output, routed into this project's log.

Left alone, both print to stderr themselves: weight-loading progress bars, a
torchvision fallback notice, and "modules ... should be kept in float32" for every
`from_pipe`. A user of `python -m bot imagine` should see the job's bar and its
summary, and an operator's log should hold what matters: the bars are switched off,
the libraries' records go through the `logging` tree like everyone else's, and the
known chatter among them is demoted to debug. Their real warnings stay warnings.
"""

from __future__ import annotations

import logging
import warnings

# messages that say nothing an operator can act on (substrings)
CHATTER = (
    "should be kept in float32",  # diffusers, on every from_pipe of a model loaded without torch_dtype quirks
    "requires torchvision (not installed)",  # transformers: this project never uses torchvision
)
LIBRARIES = ("diffusers", "transformers")
# Python warnings the libraries raise about their own code (message regexes)
OWN_DEPRECATIONS = (
    # diffusers' SDXL pipelines call their own deprecated upcast_vae to decode a float16 VAE in float32
    r"`upcast_vae` is deprecated",
)

_relay = logging.getLogger("generation.libraries")


class _Relay(logging.Handler):
    """Hands a library's record to this project's log, its level lowered when it is chatter."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and any(text in record.getMessage() for text in CHATTER):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if _relay.isEnabledFor(record.levelno):
            _relay.handle(record)


def route_library_logs() -> None:
    """Call before loading models (importing diffusers already logs); safe to call again."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.disable_default_handler()
        library.disable_propagation()
    for message in OWN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _Relay) for handler in logger.handlers):
            logger.addHandler(_Relay())
