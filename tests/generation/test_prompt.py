"""The prompt language, rule by rule (docs/prompt-language.md: the contract and its choices)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.prompt import (
    MAX_SEED,
    GenerationRequest,
    LoraRef,
    Params,
    PromptError,
    PromptLimits,
    Segment,
    apply_suffix,
    parse_prompt,
    with_parameter,
)


def one(prompt: str, **limits) -> GenerationRequest:
    jobs = parse_prompt(prompt, PromptLimits(**limits))
    assert len(jobs) == 1, jobs
    return jobs[0]


def texts(prompt: str) -> list[tuple[str, float]]:
    return [(s.text, s.weight) for s in one(prompt).segments]


def error_of(prompt: str, **limits) -> str:
    with pytest.raises(PromptError) as caught:
        parse_prompt(prompt, PromptLimits(**limits))
    return str(caught.value)


# --- shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "urls", "rest"), [
    ("https://a.example/x.png a cat", ["https://a.example/x.png"], "a cat"),
    ("http://a.example/x.JPG https://b.example/y.jpeg cat",
     ["http://a.example/x.JPG", "https://b.example/y.jpeg"], "cat"),
    ("https://cdn.example/att/1/x.webp?ex=65&is=66 cat", ["https://cdn.example/att/1/x.webp?ex=65&is=66"], "cat"),
    ("https://a.example/anim.gif", ["https://a.example/anim.gif"], None),
    ("a cat https://a.example/x.png", [], "a cat https://a.example/x.png"),  # only leading links count
])
def test_leading_image_links_become_image_prompts(prompt, urls, rest):
    request = one(prompt)
    assert list(request.image_urls) == urls
    assert [s.text for s in request.segments] == ([rest] if rest else [])


def test_at_most_five_image_prompts():
    five = " ".join(f"https://a.example/{i}.png" for i in range(5))
    assert len(one(five + " cat").image_urls) == 5
    assert error_of(five + " https://a.example/6.png cat") == (
        "too many image links: at most 5 image prompts are allowed")


def test_a_leading_link_that_is_not_an_image_is_refused():
    message = error_of("https://example.com/page cat")
    assert message.startswith("`https://example.com/page` is not an image link")
    assert ".png" in message


@pytest.mark.parametrize("prompt", [
    "a cat --ar 16:9", "a cat —ar 16:9", "a cat –ar 16:9", "a cat --AR 16:9", "a cat --Aspect 16:9",
    "a cat --aspect 16:9",
])
def test_parameter_names_dashes_and_aliases(prompt):
    request = one(prompt)
    assert request.params.aspect == "16:9"
    assert texts(prompt) == [("a cat", 1.0)]


def test_parameters_start_at_a_word_boundary():
    assert texts("a well--known cat—dog") == [("a well--known cat—dog", 1.0)]


@pytest.mark.parametrize(("prompt", "message"), [
    ("cat --ar 1:1 --ar 2:3", "--aspect is given twice: give it once"),
    ("cat --ar 1:1 --aspect 2:3", "--aspect is given twice (--ar and --aspect are the same parameter): give it once"),
    ("cat --no fog --no rain", "--no is given twice: give it once"),
    ("cat --tile --tile", "--tile is given twice: give it once"),
])
def test_a_parameter_given_twice_is_an_error(prompt, message):
    assert error_of(prompt) == message


@pytest.mark.parametrize(("prompt", "message"), [
    ("cat --chaso 5", "unknown parameter --chaso: did you mean --chaos?"),
    ("cat --stylise 50", "unknown parameter --stylise: did you mean --stylize?"),
    ("cat --aspct 2:3", "unknown parameter --aspct: did you mean --aspect?"),
    ("cat --seeds 4", "unknown parameter --seeds: did you mean --seed?"),
    ("cat --samplr euler", "unknown parameter --samplr: did you mean --sampler?"),
])
def test_unknown_parameters_suggest_the_closest(prompt, message):
    assert error_of(prompt) == message


def test_unknown_parameter_with_nothing_close_lists_them_all():
    message = error_of("cat --zzzzzz")
    assert message.startswith("unknown parameter --zzzzzz. Known parameters: --aspect, --chaos")


@pytest.mark.parametrize("prompt", ["a -- b", "a --", "cat -- --ar 1:1"])
def test_a_lone_double_dash_is_explained(prompt):
    assert error_of(prompt).startswith("a lone `--`")


# --- text: segments, --no, emphasis --------------------------------------------------


@pytest.mark.parametrize(("prompt", "segments"), [
    ("hot:: dog", [("hot", 1.0), ("dog", 1.0)]),
    ("space::2 ship", [("space", 2.0), ("ship", 1.0)]),
    ("space::2 ship::", [("space", 2.0), ("ship", 1.0)]),
    ("a::1.5 b::.5 c", [("a", 1.5), ("b", 0.5), ("c", 1.0)]),
    ("still life painting:: fruit::-.5", [("still life painting", 1.0), ("fruit", -0.5)]),
    ("hot:: 2 dogs", [("hot", 1.0), ("2 dogs", 1.0)]),  # a number right after :: only
    ("cat::3", [("cat", 3.0)]),
])
def test_multi_prompt_segments_and_weights(prompt, segments):
    assert texts(prompt) == segments


@pytest.mark.parametrize("prompt", ["cat::-1", "cat::1 dog::-1", "cat::0"])
def test_weights_must_sum_to_more_than_zero(prompt):
    assert error_of(prompt) == "the `::` weights add up to zero or less: they must add up to more than zero"


def test_weight_with_no_text_before_it():
    assert error_of("::2 cat") == "`::2` has no text before it to weigh"


def test_no_adds_negative_segments_after_the_text():
    assert texts("a still life:: fruit::2 --no apples, bananas\\, ripe ,  pears") == [
        ("a still life", 1.0), ("fruit", 2.0),
        ("apples", -0.5), ("bananas, ripe", -0.5), ("pears", -0.5),
    ]


def test_no_is_not_counted_in_the_weight_sum():
    # documented choice: `--no a, b, c` on a one-segment prompt must work
    assert [s.weight for s in one("cat --no a, b, c").segments] == [1.0, -0.5, -0.5, -0.5]


def test_no_needs_something():
    assert error_of("cat --no ,") == "--no needs something to leave out, like `--no fog, text`"
    assert error_of("cat --no") == "--no needs a value"


@pytest.mark.parametrize("text", [
    "a (red:1.3) circle", "((big)) [blue] square", r"a \(literal\) star", "(red)1.3 circle++",
])
def test_emphasis_stays_verbatim_for_the_conditioning_step(text):
    assert texts(text + " --ar 1:1") == [(text, 1.0)]


def test_emphasis_colon_is_not_a_segment_break():
    assert texts("(red:1.3):: blue") == [("(red:1.3)", 1.0), ("blue", 1.0)]


# --- LoRA tags -----------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "loras", "text"), [
    ("a cat <lora:pixel:0.8>", [LoraRef("pixel", 0.8)], "a cat"),
    ("<lora:niji> a cat", [LoraRef("niji", 1.0)], "a cat"),
    ("a <lora:niji:.5> cat <lora:my style v2:-1>", [LoraRef("niji", 0.5), LoraRef("my style v2", -1.0)], "a cat"),
])
def test_lora_tags_are_taken_out_of_the_text(prompt, loras, text):
    request = one(prompt)
    assert list(request.loras) == loras
    assert [s.text for s in request.segments] == [text]


@pytest.mark.parametrize(("prompt", "message"), [
    ("cat <lora:pixel:strong>", "the weight in <lora:pixel:strong> takes a number, got `strong`"),
    ("cat <lora:pixel:9>", "the weight in <lora:pixel:9> must be between -5 and 5"),
    ("cat <lora:pixel> <lora:pixel:0.5>", "the LoRA `pixel` is given twice: give it once"),
    ("cat <lora::1>", "`<lora::1>` has no LoRA name: write <lora:name:weight>"),
    ("cat <hypernet:x:1>", "`<hypernet:x:1>`: only <lora:name:weight> tags are supported"),
])
def test_bad_lora_tags(prompt, message):
    assert error_of(prompt) == message


# --- permutations, --repeat, the job cap ---------------------------------------------


def test_permutations_expand_in_order():
    jobs = parse_prompt("a {red, green, blue} bird")
    assert [j.segments[0].text for j in jobs] == ["a red bird", "a green bird", "a blue bird"]


def test_permutations_are_cartesian_and_nested():
    jobs = parse_prompt("{big, {small, tiny}} {cat, dog}")
    assert [j.segments[0].text for j in jobs] == [
        "big cat", "big dog", "small cat", "small dog", "tiny cat", "tiny dog"]


def test_escaped_commas_and_braces():
    jobs = parse_prompt(r"{salt\, pepper, oil} \{literal\}")
    assert [j.segments[0].text for j in jobs] == ["salt, pepper {literal}", "oil {literal}"]


def test_parameters_can_be_permuted():
    jobs = parse_prompt("a cat --ar {1:1, 16:9} --chaos {0, 50}")
    assert [(j.params.aspect, j.params.chaos) for j in jobs] == [
        ("1:1", 0), ("1:1", 50), ("16:9", 0), ("16:9", 50)]


def test_repeat_makes_copies_and_new_seeds_follow_a_given_seed():
    jobs = parse_prompt("a cat --repeat 3")
    assert len(jobs) == 3 and all(j == jobs[0] for j in jobs) and jobs[0].params.seed is None
    seeded = parse_prompt("a cat --r 3 --seed 4294967290")
    assert [j.params.seed for j in seeded] == [4294967290, 4294967294, 2]  # +4 each, wrapping at 2^32


@pytest.mark.parametrize(("prompt", "limit", "count"), [
    ("{a,b,c,d} {e,f,g}", 10, "12"),
    ("cat --r 11", 10, "11"),
    ("{a, b} --r 6", 10, "more than 10"),
    ("{a, b, c}", 2, "3"),
])
def test_the_job_cap(prompt, limit, count):
    message = error_of(prompt, max_jobs=limit)
    assert message == (f"this prompt makes {count} jobs; the limit is {limit}. "
                       "Use fewer {options} or a smaller --repeat.")


def test_the_job_cap_stops_a_huge_expansion_early():
    bomb = "{a,b,c,d,e,f,g,h,i,j}" * 30  # 10^30 prompts if expanded
    assert "the limit is 10" in error_of(bomb)


@pytest.mark.parametrize(("prompt", "start"), [
    ("{red, green bird", "a `{` is never closed"),
    ("red} bird", "there is a `}` without its `{`"),
])
def test_unbalanced_braces(prompt, start):
    assert error_of(prompt).startswith(start)


# --- empty and too long --------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "--ar 16:9", "<lora:pixel>", "--no red", ":: ::"])
def test_empty_text_without_an_image_is_an_error(prompt):
    assert error_of(prompt) == "the prompt is empty: describe the picture, or start with an image link"


def test_an_image_alone_is_a_prompt():
    request = one("https://a.example/x.png --iw 2")
    assert request.segments == () and request.params.image_weight == 2


def test_text_longer_than_the_limit():
    assert one("x" * 20, max_text_length=20)
    assert error_of("x" * 21 + " --ar 1:1", max_text_length=20) == "the prompt text is 21 characters; the limit is 20"


# --- parameters: values, ranges, coercions -------------------------------------------


@pytest.mark.parametrize(("flag", "field", "value"), [
    ("--ar 16:9", "aspect", "16:9"), ("--ar 4:1", "aspect", "4:1"), ("--ar 1:4", "aspect", "1:4"),
("--chaos 0", "chaos", 0), ("--c 100", "chaos", 100),
    ("--q .25", "quality", 0.25), ("--q .5", "quality", 0.5), ("--q 1", "quality", 1.0), ("--q 2", "quality", 2.0),
    ("--q .3", "quality", 0.25), ("--q .75", "quality", 0.5), ("--q 1.9", "quality", 1.0),
    ("--q 5", "quality", 2.0), ("--quality 2.5", "quality", 2.0),
    ("--seed 0", "seed", 0), (f"--seed {MAX_SEED}", "seed", MAX_SEED),
    ("--stop 10", "stop", 10), ("--stop 100", "stop", 100),
    ("--s 0", "stylize", 0), ("--stylize 1000", "stylize", 1000),
    ("--tile", "tile", True), ("--niji", "niji", True), ("--niji 6", "niji", "6"),
    ("--v 6.1", "version", "6.1"), ("--version builtin", "version", "builtin"),
    ("--style raw", "style", "raw"), ("--style RAW", "style", "raw"),
    ("--iw 0", "image_weight", 0.0), ("--iw 3", "image_weight", 3.0), ("--iw 1.25", "image_weight", 1.25),
    ("--steps 1", "steps", 1), ("--steps 150", "steps", 150),
    ("--cfg 0", "cfg", 0.0), ("--cfg 7.5", "cfg", 7.5), ("--cfg 30", "cfg", 30.0),
    ("--sampler euler_a", "sampler", "euler_a"), ("--sampler Euler a", "sampler", "euler_a"),
    ("--sampler DPM++ 2M Karras", "sampler", "dpm++_2m_karras"),
    ("--fast", "mode", "fast"), ("--relax", "mode", "relax"), ("--turbo", "mode", "turbo"),
])
def test_parameter_values(flag, field, value):
    params = one("cat " + flag).params
    assert getattr(params, field) == value
    assert params == Params(**{field: value})  # nothing else changed


def test_defaults():
    assert one("cat").params == Params(aspect="1:1", chaos=0, quality=1.0, seed=None, stop=100, stylize=100,
                                       tile=False, niji=None, version=None, style=None, image_weight=1.0,
                                       steps=None, cfg=None, sampler=None, mode=None)


@pytest.mark.parametrize(("flag", "message"), [
    ("--ar 5:1", "--ar 5:1 is too wide: the ratio must be between 1:4 and 4:1"),
    ("--ar 1:5", "--ar 1:5 is too tall: the ratio must be between 1:4 and 4:1"),
    ("--ar 0:1", "--ar sides must be at least 1, got 0:1"),
    ("--ar 16x9", "--ar takes a ratio of whole numbers like 16:9, got `16x9`"),
    ("--ar 1.5:1", "--ar takes a ratio of whole numbers like 16:9, got `1.5:1`"),
    ("--chaos 101", "--chaos must be between 0 and 100, got 101"),
    ("--c -1", "--c must be between 0 and 100, got -1"),
    ("--chaos 5.5", "--chaos takes a whole number from 0 to 100, got `5.5`"),
    ("--q .2", "--q must be at least .25 (allowed: .25, .5, 1, 2), got 0.2"),
    ("--q high", "--q takes a number, got `high`"),
    ("--seed -1", "--seed must be between 0 and 4294967295, got -1"),
    ("--seed 4294967296", "--seed must be between 0 and 4294967295, got 4294967296"),
    ("--stop 9", "--stop must be between 10 and 100, got 9"),
    ("--stylize 1001", "--stylize must be between 0 and 1000, got 1001"),
    ("--iw 3.5", "--iw must be between 0 and 3, got 3.5"),
    ("--repeat 0", "--repeat must be between 1 and 40, got 0"),
    ("--r 41", "--r must be between 1 and 40, got 41"),
    ("--steps 151", "--steps must be between 1 and 150, got 151"),
    ("--cfg 31", "--cfg must be between 0 and 30, got 31"),
    ("--tile yes", "--tile takes no value, got `yes`. Put the prompt text before the parameters."),
    ("--fast --relax", "choose one queue mode: --fast and --relax were both given"),
    ("--niji --v 6", "--niji and --version both pick the model: give one of them"),
    ("--ar 16:9 wearing a hat",
     "--ar takes one value, got `16:9 wearing a hat`. Put text such as `wearing a hat` before the parameters."),
    ("--style very raw", "--style takes one value, got `very raw`. Put text such as `raw` before the parameters."),
    ("--seed", "--seed needs a value"),
])
def test_parameter_errors_name_the_allowed_values(flag, message):
    assert error_of("cat " + flag) == message


def test_aspect_limit_is_configurable():
    assert one("cat --ar 6:1", max_aspect_ratio=6).params.aspect == "6:1"
    assert error_of("cat --ar 3:1", max_aspect_ratio=2) == (
        "--ar 3:1 is too wide: the ratio must be between 1:2 and 2:1")


# --- the JSON shape ------------------------------------------------------------------


def test_json_shape_for_the_documented_example():
    request = one("space::2 ship <lora:pixel:0.8> --ar 16:9")
    assert request.to_dict() == {
        "segments": [{"text": "space", "weight": 2.0}, {"text": "ship", "weight": 1.0}],
        "params": {"aspect": "16:9", "chaos": 0, "quality": 1, "seed": None, "stop": 100, "stylize": 100,
                   "tile": False, "niji": None, "version": None, "style": None, "image_weight": 1,
                   "steps": None, "cfg": None, "sampler": None, "mode": None},
        "image_urls": [], "loras": [{"name": "pixel", "weight": 0.8}],
    }


@pytest.mark.parametrize("prompt, shown", [
    ("a lighthouse at dusk", "a lighthouse at dusk"),
    ("a lighthouse —ar 16:9 --no fog, rain --seed 7 --fast", "a lighthouse --ar 16:9 --seed 7 --fast --no fog, rain"),
    ("space::2 ship <lora:pixel:0.8> --niji --tile --s 250 --c 20 --q .5",
     "space::2 ship::1 <lora:pixel:0.8> --chaos 20 --q 0.5 --s 250 --niji --tile"),
    ("https://example.com/a.png a cat --iw 2 --v 6 --steps 12 --cfg 4.5 --sampler euler_a --stop 50",
     "https://example.com/a.png a cat --stop 50 --iw 2 --v 6 --steps 12 --cfg 4.5 --sampler euler_a"),
    ("cat::1 dog::-0.25 --no fog", "cat::1 dog::-0.25 --no fog"),  # trailing -0.5 segments read as --no
    ("a::0 b::2 --no c", "a::0 b::2 --no c"),  # weight 0 kept in place
])
def test_a_request_written_back_as_a_prompt_parses_to_the_same_request(prompt, shown):
    request = one(prompt)
    assert request.to_prompt() == shown
    assert one(shown) == request


def test_segment_helpers():
    request = one("cat::2 dog --no red")
    assert request.positive_segments == (Segment("cat", 2.0), Segment("dog", 1.0))
    assert request.negative_segments == (Segment("red", -0.5),)


# --- properties ----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
       | st.lists(st.sampled_from(["cat", "::", "::2", "--ar", "16:9", "--no", ",", "{", "}", "\\,", "—",
                                   "<lora:x:1>", "https://a.example/x.png", "--seed", "7", "(red:1.3)",
                                   "--repeat", "3", "--niji", "--tile", "-", ":", " "]), max_size=14)
       .map(" ".join))
def test_any_text_parses_or_raises_prompt_error(prompt):
    try:
        jobs = parse_prompt(prompt)
    except PromptError as error:
        assert str(error)
    else:
        assert 1 <= len(jobs) <= PromptLimits().max_jobs
        for job in jobs:
            assert job.segments or job.image_urls
            assert all(s.text and s.text == s.text.strip() for s in job.segments)
            # something to draw: a positive segment, or an image with only --no segments
            assert job.positive_segments or (job.image_urls and all(s.weight == -0.5 for s in job.segments))
            # what the job table stores reads back as the same request
            assert GenerationRequest.from_dict(json.loads(json.dumps(job.to_dict()))) == job


words = st.sampled_from(["red", "circle", "a", "blue", "square", "lighthouse", "dusk", "(star:1.2)"])


@settings(max_examples=200, deadline=None)
@given(text=st.lists(words, min_size=1, max_size=6).map(" ".join),
       seed=st.integers(0, MAX_SEED), chaos=st.integers(0, 100), aspect=st.sampled_from(["1:1", "16:9", "2:3"]),
       no=st.lists(st.sampled_from(["fog", "red", "blue"]), max_size=3, unique=True))
def test_seed_reproduces_the_same_request(text, seed, chaos, aspect, no):
    prompt = f"{text} --seed {seed} --c {chaos} --ar {aspect}" + (f" --no {', '.join(no)}" if no else "")
    first, second = parse_prompt(prompt), parse_prompt(prompt)
    assert first == second
    (job,) = first
    assert (job.params.seed, job.params.chaos, job.params.aspect) == (seed, chaos, aspect)
    assert [s.text for s in job.negative_segments] == no
    assert job.segments[0] == Segment(text, 1.0)


# --- default parameters from /settings -----------------------------------------------


@pytest.mark.parametrize("prompt, suffix, result", [
    ("a cat", "--s 250 --style raw", "a cat --s 250 --style raw"),
    ("a cat --stylize 50", "--s 250 --style raw", "a cat --stylize 50 --style raw"),  # aliases are the same
    ("a cat —ar 2:3", "--ar 16:9", "a cat —ar 2:3"),  # phone dashes count as the prompt's own
    ("a cat --niji", "--v builtin --s 250", "a cat --niji --s 250"),  # --niji and --v exclude each other
    ("a {red, blue} cat", "--tile", "a {red, blue} cat --tile"),
    ("a cat", "", "a cat"),
])
def test_a_users_default_parameters_apply_unless_the_prompt_sets_them(prompt, suffix, result):
    assert apply_suffix(prompt, suffix) == result
    parse_prompt(result)  # and the result is a valid prompt


def test_settings_edit_one_parameter_of_the_suffix():
    suffix = with_parameter("", "stylize", "--s 250")
    suffix = with_parameter(suffix, "style", "--style raw")
    assert suffix == "--s 250 --style raw"
    assert with_parameter(suffix, "stylize", "--s 750") == "--style raw --s 750"
    assert with_parameter(suffix, "style", None) == "--s 250"
    assert with_parameter("--niji 6 --s 50", "version", "--v builtin") == "--s 50 --v builtin"


# --- hostile prompts: bounded, finite, and always a PromptError ------------------------


@pytest.mark.parametrize(("prompt", "start"), [
    ("{" * 2999 + "a" + "}" * 2999, "the prompt is 5999 characters long with its links and parameters"),
    ("{" * 11 + "a" + "}" * 11, "permutations are nested more than 10 deep"),
    ("(" * 700 + "cat" + ")" * 700, "brackets are nested more than 10 deep"),
    ("[" * 11 + "cat", "brackets are nested more than 10 deep"),
    ("a cat --ar " + "9" * 400 + ":1", "--ar takes a ratio of whole numbers like 16:9"),
    ("a cat --ar 100000:1", "--ar takes a ratio of whole numbers like 16:9"),
    ("a::" + "9" * 400 + " b::-" + "9" * 400, "the weight `::" + "9" * 19 + "…` is too large"),
    ("a red circle::" + "9" * 400, "the weight `::" + "9" * 19 + "…` is too large"),
    ("a red circle::1001", "the weight `::1001` is too large: `::` weights go from -1000 to 1000"),
    ("(cat:" + "9" * 400 + ")", "the emphasis on `cat` comes to inf"),
    ("(cat:11)", "the emphasis on `cat` comes to 11: emphasis weights go from -10 to 10"),
    ("((b:5):3)", "the emphasis on `b` comes to 15"),
    ("(a:1.2.3)", "`1.2.3` is not a number: write an emphasis weight like (word:1.3)"),
    ("cat --no " + ", ".join(["fog"] * 50), "this prompt has 51 `::` segments and --no items; the limit is 50"),
    ("cat --no " + "BREAK " * 660, "this prompt has 660 BREAKs; the limit is 8"),
    ("cat <b:<lora:x:1>>", "`<b: >`: only <lora:name:weight> tags are supported"),
    ("a cat --no (fog:" + "9" * 30 + ")", "the emphasis on `fog` comes to 1e+30"),
])
def test_hostile_prompts_are_refused_with_a_reason(prompt, start):
    assert error_of(prompt).startswith(start)


def test_a_4301_digit_aspect_is_refused_by_the_parser_too():
    assert error_of("a cat --ar " + "9" * 4301, max_input_length=10_000).startswith(
        "--ar takes a ratio of whole numbers like 16:9")


def test_refusals_never_echo_a_huge_value():
    for prompt in ("cat <lora:" + "n" * 3900 + ":9>", "cat <b:" + "n" * 3900 + ">", "<lora:" + " " * 3900 + ":1>",
                   "a <lora:" + "n" * 1900 + "> <lora:" + "n" * 1900 + ">", "a --seed " + "1" * 3000,
                   "a --" + "x" * 3000, "a --tile " + "y" * 3000, "a --ar " + "8" * 3000):
        assert len(error_of(prompt)) < 300


def test_a_huge_permutation_count_is_reported_without_expanding():
    assert error_of("{a,b}" * 40) == ("this prompt makes more than 1000 jobs; the limit is 10. "
                                      "Use fewer {options} or a smaller --repeat.")


@pytest.mark.parametrize(("prompt", "start"), [
    ("a <lora:pixel>--ar 16:9", "`--ar` is read as text here"),
    ("a::--3", "`--3` is read as text here"),
    ("a --no fog,—ar 16:9", "`—ar` is inside --no"),
])
def test_text_that_would_turn_into_a_parameter_is_refused(prompt, start):
    assert error_of(prompt).startswith(start)


@pytest.mark.parametrize("prompt", [
    r"a \{literal\} brace",
    r"a \\{x, y} z",
    "a::0 b",
    "cat::1 dog::-0.5 bird::2",
    r"cat --no a\, b, c\{1\,2\}",
    "cat --no a\\",
    "cat --no a\\ , b",
    "time: ::2 tide",
    "https://a.example/x.png cat --iw 1.23456",
    "https://a.example/x.png --iw 1.23456 --cfg 7.55555 --q 1.7",
    "a::0.00001 b::123.45678",
    "(a [b:1.3)] c BREAK d",
    "cute cat <3 :: happy dog >w<",
    "cat <lora:z<lora:x:1>>",
])
def test_each_known_round_trip_failure_now_reads_back_the_same(prompt):
    requests = parse_prompt(prompt)  # each of these is accepted: none passes by being refused
    for request in requests:
        assert parse_prompt(request.to_prompt()) == [request], request.to_prompt()


fuzz_tokens = st.sampled_from([
    "cat", "a", "::", "::0", "::2", "::-1", "::-0.5", "::1.23456", ":", ",", "\\", "\\,", "\\{", "\\}", "\\\\",
    "{", "}", "{a, b}", "(", ")", "[", "]", "(red:1.3)", "BREAK", "—", "-", "--no", "--ar", "2:3", "--iw", "1.5",
    "<lora:pixel:0.5>", "https://a.example/x.png", "--seed", "9", "--tile", " ", "  ", "\t", "é", "🙂"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(fuzz_tokens, max_size=16).map("".join) | st.lists(fuzz_tokens, max_size=16).map(" ".join)
       | st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_every_accepted_prompt_reads_back_from_what_is_shown(prompt):
    try:
        requests = parse_prompt(prompt)
    except PromptError:
        return
    for request in requests:
        shown = request.to_prompt()
        assert parse_prompt(shown) == [request], shown
