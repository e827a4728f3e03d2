"""The progress codec: what Kafka's commit metadata holds round-trips and stays small."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventvault.errors import ArchiveStateError
from eventvault.progress import Cut, Progress, decode_progress, encode_progress

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
