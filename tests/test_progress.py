"""The progress codec: what Kafka's commit metadata holds round-trips and stays small."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventvault.errors import ArchiveStateError
from eventvault.progress import (
    MAX_SPAN,
    Cut,
    Progress,
    decode_progress,
    encode_progress,
    progress_chars,
)

cuts = st.builds(lambda f, span, h: Cut(f, f + span, h), st.integers(0, 10**12),
                 st.integers(0, 10**7), st.none() | st.integers(0, 70_000_000))


@given(st.integers(0, 10**12), st.lists(cuts, max_size=40, unique=True))
def test_round_trip(offset: int, cs: list[Cut]) -> None:
    p = Progress(offset, tuple(sorted(cs)), "abcd1234")
    assert decode_progress(offset, encode_progress(p)) == p


def test_sixty_four_realistic_cuts_fit_the_broker_limit() -> None:
    offset = 9_000_000_000
    cs = tuple(Cut(offset + i * 100_000, offset + i * 100_000 + 99_999, 490_000 + i)
               for i in range(64))
    assert len(encode_progress(Progress(offset, cs, "abcd1234"))) < 4096


def test_too_many_cuts_is_an_error_not_a_silent_truncation() -> None:
    cs = tuple(Cut(10**11 + i * 10**9, 10**11 + i * 10**9 + 10**8, 490_000 + i)
               for i in range(200))
    with pytest.raises(ArchiveStateError):
        encode_progress(Progress(0, cs))


@pytest.mark.parametrize("text", ["something else", "ev2|x|", "ev1|x"])
def test_foreign_metadata_is_refused(text: str) -> None:
    with pytest.raises(ArchiveStateError):
        decode_progress(5, text)


def test_no_metadata_means_no_cuts() -> None:
    assert decode_progress(7, "") == Progress(7)
    assert decode_progress(7, None) == Progress(7)


@given(st.integers(0, 10**12), st.lists(cuts, max_size=40, unique=True),
       st.lists(st.tuples(st.none() | st.integers(0, 70_000_000), st.integers(0, 10**7)),
                max_size=5))
def test_the_size_bound_is_exact_for_cuts_and_widest_for_open_buffers(
        offset: int, cs: list[Cut], opened: list[tuple[int | None, int]]) -> None:
    """What the archiver checks before a buffer opens: the text once every open buffer has
    rolled, whatever its last offset (at most the widest span)."""
    cs = [Cut(c.first + offset, c.last + offset, c.hour) for c in cs]
    assert progress_chars(offset, cs, (), "abcd1234") == len(
        encode_progress(Progress(offset, tuple(sorted(cs)), "abcd1234"), 10**9))
    rolled = {Cut(offset + first, offset + first + span, hour)
              for (hour, first), span in zip(opened, [0, 7, 10**12, MAX_SPAN, 3], strict=False)}
    final = Progress(offset, tuple(sorted(set(cs) | rolled)), "abcd1234")
    bound = progress_chars(offset, cs, [(h, offset + f) for h, f in opened], "abcd1234")
    assert len(encode_progress(final, 10**9)) <= bound
