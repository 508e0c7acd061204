"""The WebUI emphasis reader against what AUTOMATIC1111's `parse_prompt_attention` returns.

Each expected value was worked out by hand from the WebUI's algorithm (modules/prompt_parser.py):
one regex splits the text into tokens; `(` and `[` push the index of the next run on two separate
stacks; `)`, `]` and `:w)` pop their own stack and multiply every run from that index to the end;
anything else is text, split at whole-word BREAK; unclosed brackets multiply at the end (all `(`
first, outermost first, then `[`); equal neighbours are merged with `==`. Weights are written as
the products the WebUI takes, in its order, so they compare exactly, bit for bit.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from compel.prompt_parser import Blend, FlattenedPrompt, Fragment

from generation.conditioning import PromptEncoder, compel_prompt
from generation.emphasis import (
    BREAK_RUN,
    EmphasisError,
    emphasis_bounds,
    parse_emphasis,
    plain_text,
    split_windows,
    webui_runs,
)
from generation.prompt import Segment

R = 1.1  # one ()
S = 1 / 1.1  # one [], the float the WebUI multiplies by
B = BREAK_RUN  # the WebUI's ["BREAK", -1]

WEBUI_CASES = [
    # the WebUI's own doctests
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", R), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", R)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1),
    ]),
    # explicit weights; the newest WebUI allows spaces around the number
    ("a (red:1.3) circle", [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]),
    ("(word: 1.3 )", [("word", 1.3)]),
    ("(word:-1)", [("word", -1.0)]),
    ("(word:.5)(x:1.)", [("word", 0.5), ("x", 1.0)]),
    ("((a:2))", [("a", 2.0 * R)]),  # inner `:2)` closes first, then the outer ()
    ("((a:5) b:2)", [("a", 5.0 * 2.0), (" b", 2.0)]),
    # `:5 (` is no weight (no `)` after the number): `:` and `5 ` are text and the outer ( closes plainly
    ("(a:5 (b:2))", [("a:5 ", R), ("b", 2.0 * R)]),
    # not a weight: the pattern takes only digits, dots and a sign, and only with `(` open
    ("(cat:9e999)", [("cat:9e999", R)]),  # `:` and `9e999` are text, `)` closes plainly
    ("[word:1.3]", [("word:1.3", S)]),  # `:1.3]` is not `:1.3)`
    ("word:1.3)", [("word:1.3)", 1.0)]),  # matched as a weight, but no ( is open: text
    ("(a: b)", [("a: b", R)]),
    ("C++ and time: 3pm", [("C++ and time: 3pm", 1.0)]),
    ("(cat:" + "9" * 400 + ")", [("cat", math.inf)]),  # float() of 400 digits is inf, no error
    # nesting
    ("((big)) cat", [("big", R * R), (" cat", 1.0)]),
    ("(a (b:1.5) c)", [("a ", R), ("b", 1.5 * R), (" c", R)]),
    ("[[x]]", [("x", S * S)]),
    # crossed brackets: ( and [ have separate stacks, so each closer finds its own kind
    # `]` scales a and b (both after the `[`), then `)` scales b and c (both after the `(`)
    ("[a (b] c)", [("a ", S), ("b", S * R), (" c", R)]),
    # `:1.3)` closes the ( and scales a and b; `]` then scales only b
    ("(a [b:1.3)]", [("a ", 1.3), ("b", 1.3 * S)]),
    # unclosed openers: at the end every open ( scales, then every open [
    ("((a", [("a", R * R)]),
    ("[a", [("a", S)]),
    ("(a [b", [("a ", R), ("b", R * S)]),
    # stray closers are text and merge with the text around them
    ("closer) only", [("closer) only", 1.0)]),
    ("a) b] c", [("a) b] c", 1.0)]),
    (")(", [(")", 1.0)]),  # the ( is unclosed but scales nothing: no run after it
    ("()", [("", 1.0)]),  # no runs at all: the WebUI returns [["", 1.0]]
    ("(:1.3)", [("", 1.0)]),
    ("", [("", 1.0)]),
    # escapes
    (r"a \(literal\) \[x\]", [("a (literal) [x]", 1.0)]),
    (r"a\\b", [("a\\b", 1.0)]),  # \\ is one backslash
    (r"\\(a)", [("\\", 1.0), ("a", R)]),  # \\ first, then a real (
    (r"(a\)", [("a)", R)]),  # \) is text, so the ( stays open
    (r"[a\]", [("a]", S)]),
    # a lone backslash is an empty run: the character after it is read as usual
    (r"a\b", [("ab", 1.0)]),  # "a", "", "b" all 1.0: merged
    ("a\\", [("a", 1.0)]),  # trailing backslash
    (r"(a\:1.3)", [("a", 1.3)]),  # the backslash does not escape the colon: "a" and "" get 1.3
    # the empty run gets 1.3 and so keeps a and b apart (the WebUI tokenizes them separately)
    (r"a(\:1.3)b", [("a", 1.0), ("", 1.3), ("b", 1.0)]),
    # merging is exact: 1.1*1.1 is 1.2100000000000002, not 1.21
    ("(a)(b:1.1)", [("ab", R)]),
    ("((a))(b:1.21)", [("a", R * R), ("b", 1.21)]),
    # BREAK: a whole word in capitals, the whitespace around it dropped
    ("a red circle BREAK a blue square", [("a red circle", 1.0), B, ("a blue square", 1.0)]),
    ("BREAK", [("", 1.0), B, ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), B, ("", 1.0), B, ("b", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), B, (",b", 1.0)]),
    ("BREAKFAST and break and BREAK_", [("BREAKFAST and break and BREAK_", 1.0)]),
    ("(a) BREAK (b)", [("a", R), ("", 1.0), B, ("", 1.0), ("b", R)]),
]


@pytest.mark.parametrize(("text", "runs"), WEBUI_CASES)
def test_runs_are_the_webuis(text, runs):
    assert webui_runs(text) == runs


def test_break_inside_brackets_stays_a_break():
    """Deliberate difference: the WebUI scales the marker to ["BREAK", -1.1], which its encoder no
    longer takes for a break, so it encodes the word "BREAK" at weight -1.1. Here it stays a break."""
    assert webui_runs("(a BREAK b)") == [("a", R), B, ("b", R)]
    assert webui_runs("[a BREAK]") == [("a", S), B, ("", S)]
    # nor is it merged into a neighbour of equal weight (WebUI: "aBREAK" at 0 under `:0`)
    assert webui_runs("(a BREAK:-1)") == [("a", -1.0), B, ("", -1.0)]


def test_a_weight_no_number_reads_is_refused():
    """The WebUI's pattern takes `1.2.3` and `.`; its float() then raises. So do we, with a message."""
    for text in ("(a:1.2.3)", "(a:.)", "(a:+.)"):
        with pytest.raises(EmphasisError, match="not a number"):
            webui_runs(text)
        with pytest.raises(EmphasisError):
            emphasis_bounds(text)
    assert webui_runs("a:1.2.3)") == [("a:1.2.3)", 1.0)]  # no ( open: text, as in the WebUI


@pytest.mark.parametrize(("text", "runs"), [
    ("a (red:1.3) circle", [("a", 1.0), ("red", 1.3), ("circle", 1.0)]),
    ("  lots   of\tspace ", [("lots of space", 1.0)]),
    (r"a(\:1.3)b", [("a", 1.0), ("b", 1.0)]),  # the empty run goes, a and b stay apart
    ("(a) BREAK (b)", [("a", R), B, ("b", R)]),
    ("BREAK", [B]),
    ("()", [("", 1.0)]),
    ("", [("", 1.0)]),
])
def test_encoder_runs_are_tidied_webui_runs(text, runs):
    """Whitespace at run edges and empty runs give no tokens, so dropping them changes nothing encoded."""
    assert parse_emphasis(text) == runs


@pytest.mark.parametrize(("text", "windows"), [
    ("a red circle", [[("a red circle", 1.0)]]),
    ("a BREAK (b)", [[("a", 1.0)], [("b", R)]]),
    ("BREAK a", [[], [("a", 1.0)]]),  # the WebUI closes the empty first window too
    ("a BREAK BREAK b", [[("a", 1.0)], [], [("b", 1.0)]]),
    ("a BREAK", [[("a", 1.0)]]),  # a trailing BREAK opens no window
    ("BREAK", [[]]),
    ("", [[]]),
])
def test_break_splits_windows_as_the_webui_fills_them(text, windows):
    assert split_windows(parse_emphasis(text)) == windows


def test_plain_text_drops_marks_and_breaks():
    assert plain_text("a (red:1.3) [circle] BREAK on (white") == "a red circle on white"
    assert plain_text(r"a(\:1.3)b \(x\)") == "a b (x)"
    assert plain_text("BREAKFAST") == "BREAKFAST"


@pytest.mark.parametrize(("text", "depth", "largest"), [
    ("a red circle", 0, 1.0),
    ("", 0, 0.0),
    ("()", 1, 0.0),  # brackets around nothing weigh nothing
    ("((big)) [cat]", 2, R * R),
    ("[a (b] c)", 2, R),  # crossed: both open at once
    ("(a [b:1.3)]", 2, 1.3),
    ("((a:5) b:2)", 2, 10.0),
    ("(a:5 (b:2))", 2, 2.0 * R),
    ("(a:-3)", 1, 3.0),
    ("(((a", 3, R * R * R),  # unclosed ones count
    ("a))) b]]]", 0, 1.0),  # stray closers do not
    (r"\(\(\(a", 0, 1.0),  # nor escaped openers
    ("(cat:9e999)", 1, R),  # text to the WebUI
    ("a BREAK b", 0, 1.0),
])
def test_bounds(text, depth, largest):
    assert emphasis_bounds(text) == (depth, pytest.approx(largest, rel=1e-12))


@pytest.mark.parametrize("text", [
    "(cat:" + "9" * 400 + ")",  # inf
    "((cat:0):" + "9" * 400 + ")",  # 0 x inf: nan
    "(" * 400 + "cat" + ":1000)" * 400,  # 1000**400 overflows
])
def test_bounds_report_weights_that_are_not_finite(text):
    depth, largest = emphasis_bounds(text)
    assert largest == math.inf and not math.isfinite(largest)
    assert depth >= 1


def test_bounds_agree_with_the_runs():
    for text, _ in WEBUI_CASES:
        words = [abs(w) for piece, w in parse_emphasis(text) if piece and (piece, w) != BREAK_RUN]
        expected = max(words, default=0.0)
        largest = emphasis_bounds(text)[1]
        assert largest == pytest.approx(expected, rel=1e-12) or (math.isinf(largest) and math.isinf(expected))


def test_bounds_are_linear_on_deep_nesting():
    """700 nested ( (or 200,000) is answered at once, without recursion or overflow."""
    assert emphasis_bounds("(" * 700 + "cat")[0] == 700
    text = "(a" * 100_000 + ")" * 100_000
    start = time.perf_counter()
    depth, largest = emphasis_bounds(text)
    assert time.perf_counter() - start < 2.0
    assert depth == 100_000 and largest == math.inf  # 1.1**100000 overflows


# ---------------------------------------------------------------------------
# BREAK in the conditioning, on the built-in model's encoder


@pytest.fixture(scope="module")
def encoder(engine) -> PromptEncoder:
    return engine.model("builtin").encoder


@pytest.fixture(scope="module")
def window(encoder) -> int:
    return encoder._compels[0].conditioning_provider.tokenizer.model_max_length


def embeds(encoder: PromptEncoder, *segments: tuple[str, float]):
    return encoder.encode([Segment(text, weight) for text, weight in segments])


def test_break_starts_a_new_window(encoder, window):
    both = embeds(encoder, ("a red circle BREAK a blue square", 1.0)).prompt_embeds
    first = embeds(encoder, ("a red circle", 1.0)).prompt_embeds
    second = embeds(encoder, ("a blue square", 1.0)).prompt_embeds
    assert both.shape[1] == 2 * window and first.shape[1] == second.shape[1] == window
    torch.testing.assert_close(both[:, :window], first)
    torch.testing.assert_close(both[:, window:], second)
    # the same text without BREAK is one window, and a different one
    joined = embeds(encoder, ("a red circle a blue square", 1.0)).prompt_embeds
    assert joined.shape[1] == window and not torch.allclose(joined, first)


def test_break_keeps_emphasis_in_each_window(encoder, window):
    both = embeds(encoder, ("(red:1.5) circle BREAK [blue] square", 1.0)).prompt_embeds
    torch.testing.assert_close(both[:, :window], embeds(encoder, ("(red:1.5) circle", 1.0)).prompt_embeds)
    torch.testing.assert_close(both[:, window:], embeds(encoder, ("[blue] square", 1.0)).prompt_embeds)


def test_negative_side_is_padded_to_the_break_windows(encoder, window):
    conditioning = embeds(encoder, ("a red circle BREAK a blue square", 1.0), ("green", -0.5))
    assert conditioning.negative_prompt_embeds.shape == conditioning.prompt_embeds.shape
    alone = embeds(encoder, ("green", 1.0)).prompt_embeds
    torch.testing.assert_close(conditioning.negative_prompt_embeds[:, :window], alone)
    empty = encoder._compels[0].conditioning_provider.empty_z
    torch.testing.assert_close(conditioning.negative_prompt_embeds[:, window:], empty)
    # and a BREAK on the negative side pads the positive one
    flipped = embeds(encoder, ("a red circle", 1.0), ("green BREAK blue", -1.0))
    assert flipped.prompt_embeds.shape == flipped.negative_prompt_embeds.shape
    assert flipped.prompt_embeds.shape[1] == 2 * window


def test_break_in_one_of_several_segments(encoder, window):
    """Segments mix as compel's Blend mixes them; a BREAK segment is padded with empty windows first."""
    compel = encoder._compels[0]
    mixed = embeds(encoder, ("a red circle BREAK a blue square", 2.0), ("a yellow circle", 1.0)).prompt_embeds
    a = embeds(encoder, ("a red circle BREAK a blue square", 1.0)).prompt_embeds
    empty = compel.conditioning_provider.empty_z
    b = torch.cat([embeds(encoder, ("a yellow circle", 1.0)).prompt_embeds, empty], dim=1)
    torch.testing.assert_close(mixed, (2 * a + b) / 3)


def test_prompts_without_break_are_encoded_as_compel_encodes_them(encoder):
    compel = encoder._compels[0]
    ours = embeds(encoder, ("a (red:1.5) circle on [white]", 1.0)).prompt_embeds
    assert torch.equal(ours, compel.build_conditioning_tensor("a (red)1.5 circle on (white)0.9090909090909091"))
    two = embeds(encoder, ("a (red:1.5) circle", 2.0), ("a blue square", 1.0)).prompt_embeds
    blend = Blend([compel_prompt("a (red:1.5) circle"), compel_prompt("a blue square")], [2.0, 1.0])
    assert torch.equal(two, compel.build_conditioning_tensor_for_prompt_object(blend)[0][0])


@pytest.mark.parametrize("text", ["a break in the BREAKFAST", "a Break", "BREAK_TIME", "aBREAK"])
def test_break_only_as_a_whole_word_in_capitals(encoder, window, text):
    compel = encoder._compels[0]
    assert isinstance(compel_prompt(text), FlattenedPrompt)
    ours = embeds(encoder, (text, 1.0)).prompt_embeds
    assert ours.shape[1] == window
    assert torch.equal(ours, compel.build_conditioning_tensor(text))


def test_the_word_break_is_never_encoded(encoder, window):
    compel = encoder._compels[0]
    assert embeds(encoder, ("a red circle BREAK", 1.0)).prompt_embeds.shape[1] == window  # no window after it
    torch.testing.assert_close(embeds(encoder, ("a red circle BREAK", 1.0)).prompt_embeds,
                               embeds(encoder, ("a red circle", 1.0)).prompt_embeds)
    # before any text: an empty first window, as the WebUI closes it
    leading = embeds(encoder, ("BREAK a red circle", 1.0)).prompt_embeds
    torch.testing.assert_close(leading[:, :window], compel.conditioning_provider.empty_z)
    torch.testing.assert_close(leading[:, window:], embeds(encoder, ("a red circle", 1.0)).prompt_embeds)
    # inside brackets it still breaks (the WebUI would encode the word there)
    bracketed = embeds(encoder, ("(a red BREAK circle)", 1.0)).prompt_embeds
    torch.testing.assert_close(bracketed[:, window:], embeds(encoder, ("(circle)", 1.0)).prompt_embeds)
    # compel's fragments: never one that says BREAK
    conjunction = compel_prompt("a BREAK b BREAK BREAK c")
    texts = [[f.text for f in part.children] for part in conjunction.prompts]
    assert texts == [["a"], ["b"], [""], ["c"]]
    assert all(isinstance(f, Fragment) for part in conjunction.prompts for f in part.children)


def test_long_text_before_break_is_chunked_then_breaks(encoder, window):
    long_text = ", ".join(["a red circle on a white background"] * 12)
    alone = embeds(encoder, (long_text, 1.0)).prompt_embeds
    both = embeds(encoder, (long_text + " BREAK a blue square", 1.0)).prompt_embeds
    assert alone.shape[1] >= 2 * window and both.shape[1] == alone.shape[1] + window
    torch.testing.assert_close(both[:, :alone.shape[1]], alone)


def test_break_on_sdxl_keeps_both_encoders_in_step_and_pools_the_first_window(tmp_path):
    """SDXL: the two encoders' windows are joined side by side, and the pooled embedding is the
    first window's words, as the WebUI pools."""
    from diffusers import StableDiffusionXLPipeline
    from helpers.tiny_sdxl import build_tiny_sdxl

    pipe = StableDiffusionXLPipeline.from_pretrained(build_tiny_sdxl(tmp_path / "sdxl"))
    sdxl = PromptEncoder(pipe)
    both = sdxl.encode([Segment("a red circle BREAK a blue square", 1.0)])
    first = sdxl.encode([Segment("a red circle", 1.0)])
    second = sdxl.encode([Segment("a blue square", 1.0)])
    window = first.prompt_embeds.shape[1]
    assert both.prompt_embeds.shape[1] == 2 * window and both.prompt_embeds.shape[2] == 64  # 32 + 32
    torch.testing.assert_close(both.prompt_embeds[:, :window], first.prompt_embeds)
    torch.testing.assert_close(both.prompt_embeds[:, window:], second.prompt_embeds)
    torch.testing.assert_close(both.pooled_prompt_embeds, first.pooled_prompt_embeds)
    assert both.negative_prompt_embeds.shape == both.prompt_embeds.shape
