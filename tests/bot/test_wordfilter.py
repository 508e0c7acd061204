"""The banned-words matcher: each normalising rule catches what it should and nothing else,
and a refusal names the entry as the moderator typed it."""

from __future__ import annotations

from itertools import islice, product

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.wordfilter import BannedWords, merged, normalise_entry

PROMPT_TAIL = "--ar 16:9 --seed 42 --no text, watermark"


def found(entries: list[str] | str, text: str) -> str | None:
    return BannedWords([entries] if isinstance(entries, str) else entries).find(text)


@pytest.mark.parametrize("text", [
    "nude", "NUDE", "Nude", "a nude woman", "nüde", "NÜDE", "nûdé", "ñude",
    "nudе",  # Cyrillic е
    "nυde",  # Greek upsilon
    "ｎｕｄｅ",  # fullwidth
    "𝓷𝓾𝓭𝓮",  # mathematical script
    "n\u200bude",  # a zero-width space inside
    "n\u0336u\u0336d\u0336e\u0336",  # struck through with a combining mark
])
def test_case_accents_and_look_alikes_match(text):
    assert found("nude", text) == "nude"


@pytest.mark.parametrize(("entry", "text"), [
    ("porn", "рorn"),  # a Cyrillic р, which transliterates to r
    ("porn", "pοrn"),  # a Greek omicron
    ("sex", "ѕeх"),  # Cyrillic dze and ha next to a Latin e
    ("suka", "сука"),  # a word wholly in Cyrillic is transliterated
    ("сука", "suka"),  # and the moderator may type it either way
    ("сука", "СУКА"),
    ("nude", "nudе!!"),
])
def test_other_scripts_are_read_as_latin_letters(entry, text):
    assert found(entry, text) == entry


@pytest.mark.parametrize(("entry", "text"), [
    ("porn", "p0rn"), ("porn", "P0RN"), ("nude", "nud3"), ("hell", "h3ll"),
    ("ass", "@ss"), ("ass", "a$$"), ("ass", "a55"), ("sex", "s3x"), ("sex", "$ex"),
    ("sex", "5ex"), ("bitch", "b!tch"), ("shit", "sh!t"), ("slut", "s|ut"), ("boobs", "b00bs"),
    ("boobs", "8008s"), ("tits", "7i7s"), ("ass", "a$$!!"), ("blood bath", "bl00d b4th!!"),
    ("a$$", "ass"), ("n00d", "nood"),  # entries are read the same way
])
def test_common_character_swaps_inside_a_word_match(entry, text):
    assert found(entry, text) == entry


@pytest.mark.parametrize(("entry", "text"), [
    ("kill", "ki11"), ("kill", "KI11"), ("kill", "k1ll"), ("kill", "kiII"), ("kill", "kiIl"), ("slut", "s1ut"),
    ("lewd", "Iewd"), ("ill", "I11"), ("blood bath", "b1ood bath"),
])
def test_a_one_or_a_capital_i_beside_small_letters_may_stand_for_l(entry, text):
    assert found(entry, text) == entry


@pytest.mark.parametrize(("entry", "text"), [
    ("lie", "I like it"),  # a capital I alone is the word "I"
    ("lll", "a 111 cat"), ("ll", "--ar 1:1 --seed 11"),  # numbers stay numbers
    ("lass", "I ass"), ("lt", "IT"),  # whole words; in capitals an I is an i
])
def test_the_reading_with_l_keeps_words_and_numbers_apart(entry, text):
    assert found(entry, text) is None


@pytest.mark.parametrize(("entry", "text"), [
    ("ass", "a city street --seed 455"),  # 455 is a number, not "ass"
    ("ass", "--s 455 --ar 4:55"),
    ("boob", "a cat --seed 8008"),
    ("so", "a cat --s 50"),
    ("at", "a cat --ar 4:7"),  # nor are 4 and 7 spelled out as "at"
    ("ie", "(castle:1.3), (forest:1.3)"),
    ("io", "--iw 1.0 --q 0.5"),
    ("sie", "a cat --seed 5"),
    ("gore", "g0re4"),  # swaps only make whole words: "gorea" is not "gore"
    ("hi", "hi5"),  # "his"
])
def test_numbers_in_parameters_are_not_read_as_letters(entry, text):
    assert found(entry, text) is None


@pytest.mark.parametrize(("entry", "text"), [
    ("gore", "GORE!!"), ("gore", "gore,"), ("gore", "(gore:1.3)"), ("gore", "[gore]"), ("gore", "{gore}"),
    ("gore", "gore::2"), ("gore", "\"gore\""), ("gore", "gore|blood"), ("gore", "cute|gore"),
    ("nude", "nude@x"),  # a swap must not hide a word by joining it to the next
    ("nude", "a castle, (nude:1.2) --no gore"), ("gore", "a castle, (nude:1.2) --no gore"),
    ("nude", "<lora:nude:0.8>"),
])
def test_prompt_syntax_around_a_word_still_matches(entry, text):
    assert found(entry, text) == entry


@pytest.mark.parametrize(("entry", "text"), [
    ("ass", "class"), ("ass", "bass guitar"), ("ass", "my assistant"), ("ass", "assassin"), ("ass", "as"),
    ("cunt", "Scunthorpe"), ("sex", "Sussex"), ("sex", "Essex"), ("rape", "grape"), ("cock", "cocktail"),
    ("tit", "title"), ("gore", "gorey"), ("nude", "nudes"),
    ("butt", "but"), ("boob", "bob"), ("hell", "hello shell"), ("blood bath", "bloodbath"),
])
def test_only_whole_words_match(entry, text):
    assert found(entry, text) is None


@pytest.mark.parametrize(("entry", "text"), [
    ("nude", "nuuuude"), ("nude", "NNNUUUDDDEEE"), ("gore", "goooore"), ("ass", "asss"), ("ass", "aaasssss"),
    ("butt", "buttttt"), ("cool", "coool"), ("coool", "cool"), ("nude", "n u u u d e"),
    ("blood bath", "bloooood baaaath"),
])
def test_repeated_letters_match(entry, text):
    assert found(entry, text) == entry


@pytest.mark.parametrize(("entry", "text"), [
    ("ass", "as"), ("butt", "but"), ("boob", "bob"), ("cool", "col"), ("poop", "pop"),
])
def test_an_entrys_double_letter_needs_two(entry, text):
    assert found(entry, text) is None


@pytest.mark.parametrize("text", [
    "n u d e", "n.u.d.e", "n-u-d-e", "n_u_d_e", "N  U  D  E", "n. u. d. e.", "n/u/d/e", "a n u d e girl",
    "(n u d e:1.3)",
])
def test_letters_spelled_out_one_by_one_match(text):
    assert found("nude", text) == "nude"


@pytest.mark.parametrize(("entry", "text"), [
    ("nude", "nu de"),  # only one-character words are joined
    ("nude", "n u d"),
    ("at", "--ar 4:7 --s 5"),
    ("ab", "vitamin a and b"),
])
def test_only_one_character_words_are_joined(entry, text):
    assert found(entry, text) is None


def test_spelled_out_digits_match_a_banned_number():
    assert found("1488", "1 4 8 8") == "1488"
    assert found("1488", "a cat --seed 1488") == "1488"


@pytest.mark.parametrize(("text", "expected"), [
    ("a blood bath at dawn", "blood bath"),
    ("Blood   BATH", "blood bath"),
    ("blood-bath", "blood bath"),
    ("(blood bath:1.4)", "blood bath"),
    ("blood and bath", None),
    ("bath blood", None),
    ("blood", None),
    ("a blood", None),
])
def test_a_phrase_matches_its_words_in_a_row(text, expected):
    assert found("blood bath", text) == expected


def test_the_refusal_names_the_entry_as_typed():
    banned = BannedWords(["  Nude Beach ", "G0RE"])
    assert banned.find("a NUDE beach at noon") == "Nude Beach"
    assert banned.find("gore") == "G0RE"


def test_the_first_entry_in_the_prompt_is_named():
    banned = BannedWords(["gore", "nude", "blood", "blood bath"])
    assert banned.find("a nude figure, gore") == "nude"
    assert banned.find("gore, a nude figure") == "gore"
    assert banned.find("a blood bath") == "blood bath"  # at one place, the longest phrase
    assert banned.find("a blood moon") == "blood"


@pytest.mark.parametrize(("entry", "form"), [
    ("nude", "nude"), ("  Blood   BATH ", "blood bath"), ("NÜDE", "nude"), ("ｎｕｄｅ", "nude"), ("nudе", "nude"),
    ("n00d", "nood"), ("a$$", "ass"), ("coool", "cool"), ("nuuuude", "nuude"), ("(gore:1.3)", "gore 1 3"),
    ("1488", "1488"), ("f*ck", "f ck"), ("сука", "suka"),
])
def test_normalise_entry_gives_the_compared_form(entry, form):
    assert normalise_entry(entry) == form


@pytest.mark.parametrize(("entry", "message"), [
    ("", "at least one letter or digit"),
    ("   ", "at least one letter or digit"),
    ("!!!", "at least one letter or digit"),
    ("-- :: ,", "at least one letter or digit"),
    ("a" * 101, "at most 100 characters"),
    ("one two three four five six seven", "at most 6 words"),
    ("a-b-c-d-e-f-g", "at most 6 words"),
])
def test_normalise_entry_refuses_what_cannot_be_an_entry(entry, message):
    with pytest.raises(ValueError, match=message):
        normalise_entry(entry)
    with pytest.raises(ValueError, match=message):
        BannedWords(["fine", entry])


def test_the_limits_themselves_are_allowed():
    assert normalise_entry("a" * 50 + "b" * 50) == "aabb"
    assert normalise_entry(f"  {'x' * 100}  ") == "xx"  # the stripped entry is measured
    assert normalise_entry("one two three four five six") == "one two three four five six"


def test_entries_are_stripped_and_deduplicated_by_form_in_order():
    banned = BannedWords(["gore", " nude ", "NUDE", "nüde", "cool", "coool", "ass", "as", "GORE!"])
    assert banned.entries == ("gore", "nude", "cool", "ass", "as")


def test_an_empty_list_is_false_and_finds_nothing():
    assert not BannedWords([])
    assert BannedWords([]).entries == ()
    assert BannedWords([]).find("nude gore") is None
    assert BannedWords(["gore"])


def test_merged_lists_match_both_and_keep_the_first_spelling():
    global_list = BannedWords(["gore", "Nude"])
    guild_list = BannedWords(["nude", "blood bath"])
    both = merged(global_list, guild_list)
    assert both.entries == ("gore", "Nude", "blood bath")
    assert both.find("NUDE") == "Nude"
    assert both.find("a blood bath") == "blood bath"
    assert both.find("gore") == "gore"
    assert both.find("a quiet lake") is None
    assert merged(guild_list, global_list).entries == ("nude", "blood bath", "gore")
    assert merged(BannedWords([]), guild_list).entries == guild_list.entries
    assert not merged()


def many_entries() -> list[str]:
    """500 made-up banned words (consonant-vowel, so no two collapse into one) and phrases."""
    words = ["".join(letters) for letters in product("bdfgkmnprtvz", "aeiou", "bdfgkmnprtvz", "aeiou", "kxz")]
    singles = list(islice(words, 0, 450))
    phrases = [f"{first} {second}" for first, second in zip(words[450:500], words[500:550], strict=True)]
    return singles + phrases


def test_five_hundred_entries_match_correctly():
    entries = many_entries()
    banned = BannedWords(entries)
    assert len(banned.entries) == 500
    prompt = ("masterpiece, best quality, (ultra detailed:1.2), 8k wallpaper, an elven princess in a moonlit "
              "forest clearing, long silver hair, (glowing runes:1.3), fireflies, soft volumetric light, mist, "
              "by greg rutkowski and alphonse mucha, sharp focus, [bokeh:0.8], cinematic composition, ") * 4
    prompt = f"{prompt[:1400]} {PROMPT_TAIL}"
    assert banned.find(prompt) is None
    for entry in entries:
        assert banned.find(f"{prompt} {entry}") == entry
        assert banned.find(f"{entry.upper()}, {prompt}") == entry
    phrase_first_word = entries[-1].split()[0]  # a phrase's first word alone is not the phrase
    assert banned.find(f"{prompt} {phrase_first_word}") is None
    assert banned.find(f"{prompt} ({entries[0].replace('a', '4')}:1.2)") == entries[0]
    assert banned.find(f"{prompt} {' '.join(entries[1])}") == entries[1]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
def test_an_entry_always_finds_itself(entry):
    try:
        normalise_entry(entry)
    except ValueError:
        assume(False)
    assert BannedWords([entry]).find(entry) == entry.strip()
    assert BannedWords([entry]).find(f"a cat, ({entry}:1.2) --ar 16:9") == entry.strip()


@settings(max_examples=300, deadline=None)
@given(entry=st.from_regex(r"[a-z]{1,8}", fullmatch=True), numbers=st.lists(st.integers(0, 99999), min_size=4,
                                                                            max_size=4))
def test_parameter_numbers_never_add_a_match(entry, numbers):
    seed, width, height, stylize = numbers
    flags = "a cat --seed --ar : --s --iw ."
    assume(found(entry, flags) is None)
    text = f"a cat --seed {seed} --ar {width}:{height} --s {stylize} --iw 0.{seed}"
    assert found(entry, text) is None
