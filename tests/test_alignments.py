"""GRID word alignments: parsing `.align` files, the grammar check, and the per-speaker word
table, on the real s1 alignments and on hand-written bad files."""

from __future__ import annotations

import pandas as pd
import pytest

from lipsync.core.errors import InputError
from lipsync.data import alignments, local
from lipsync.data.manifest import ClipEntry, write_manifest


def test_real_alignment_parses_to_six_words_in_slot_order(grid_samples):
    segments = alignments.parse_align(grid_samples / "swwp2s.align")
    assert segments[0].word == "sil" and segments[0].start == 0.0
    words = alignments.sentence(segments)
    assert [w.word for w in words][0] in alignments.GRAMMAR["command"]
    assert len(words) == 6
    assert all(a.end <= b.start + 1e-9 for a, b in zip(words, words[1:], strict=False))


def test_every_real_s1_alignment_fits_the_grammar(grid_s1, tmp_path):
    entries = local.find_clips("s1", grid_s1)
    manifest = tmp_path / "s1.tsv"
    write_manifest(manifest, entries)
    table = alignments.write_words(manifest, tmp_path / "words.tsv")
    assert len(table) == 6 * len(entries)
    words = alignments.read_words([tmp_path / "words.tsv"])
    assert alignments.transcript(words[("s1", "bbal7s")]) == "bin blue at l seven soon"
    assert words[("s1", "bbal7s")][0].start == pytest.approx(15250 / 25000)


@pytest.mark.parametrize("text, problem", [
    ("0 100 sil\n100 x bin\n", "times must be integers"),
    ("0 100 sil\n100 200\n", "expected 'start end word'"),
    ("0 100 sil\n90 200 bin\n", "overlaps"),
    ("", "empty"),
])
def test_malformed_alignment_is_refused_with_the_line(tmp_path, text, problem):
    path = tmp_path / "bad.align"
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        alignments.parse_align(path)


def test_word_outside_the_grammar_is_left_out_and_reported(tmp_path):
    good, bad = tmp_path / "good.align", tmp_path / "bad.align"
    good.write_text("0 10 sil\n10 20 set\n20 30 red\n30 40 by\n40 50 q\n50 60 two\n60 70 now\n")
    bad.write_text("0 10 sil\n10 20 set\n20 30 pink\n30 40 by\n40 50 q\n50 60 two\n60 70 now\n")
    entries = [ClipEntry("s1", "good", "v.mpg", None, str(good)),
               ClipEntry("s1", "bad", "v.mpg", None, str(bad)),
               ClipEntry("s1", "none", "v.mpg", None, None)]
    table, problems = alignments.word_table(entries)
    assert set(table["clip"]) == {"good"}
    assert any("'pink' cannot fill GRID's colour slot" in p for p in problems)
    assert any("none: no alignment" in p for p in problems)


def test_word_table_with_a_missing_slot_is_refused(tmp_path):
    path = tmp_path / "words.tsv"
    pd.DataFrame([["s1", "c", 0, "command", "bin", 0.1, 0.2]],
                 columns=alignments.COLUMNS).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="slots"):
        alignments.read_words([path])
