"""The split-agreement table: each setting against the reference and against itself redrawn."""

import numpy as np

from stratdiff.experiments.diagnostics import agreement_table


def test_agreement_table_counts_matches_with_the_reference_itself_and_the_source():
    ref = np.array([0, 0, 1, 1, 1, 0, 1, 0], bool)
    ref_again = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)  # 7 of 8 equal
    a = np.array([0, 1, 1, 1, 1, 0, 0, 0], bool)  # 6 of 8 equal to ref
    a_again = np.array([1, 0, 0, 1, 1, 0, 0, 0], bool)  # 5 of 8 equal to a
    source = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)  # ref matches it on 0,1,4,6: 4 of 8
    table = agreement_table({"ref": (ref, ref_again), "a": (a, a_again)}, source, "ref")
    assert table["reference"] == "ref" and table["samples"] == 8
    assert table["settings"]["ref"] == {"reference": 1.0, "self": 7 / 8}
    assert table["settings"]["a"] == {"reference": 6 / 8, "self": 5 / 8}
    assert table["source_match"] == 4 / 8
    assert table["online_offline_like"] == 2 / 4 and table["offline_online_like"] == 2 / 4
    # by source buffer: online samples 3-7 (ref 1 1 0 1 0), offline samples 0-2 (ref 0 0 1)
    by_source = agreement_table({"ref": (ref, ref)}, np.array([0, 0, 0, 1, 1, 1, 1, 1], bool), "ref")
    assert by_source["online_offline_like"] == 2 / 5 and by_source["offline_online_like"] == 1 / 3
    # before any online data: no online-buffer share
    assert agreement_table({"ref": (ref, ref)}, np.zeros(8, bool), "ref")["online_offline_like"] is None
