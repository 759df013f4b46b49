"""Tests for data/protocol_lists.py: video ids, protocol lists (against the real Protocol 1 files) and membership."""
from __future__ import annotations

from collections import Counter

import pytest

from data import protocol_lists
from data.protocol_lists import ProtocolError, VideoId

ALL_VIDEOS = [VideoId(p, s, u, f) for p in range(1, 7) for s in range(1, 4) for u in range(1, 56)
              for f in range(1, 6)]


class TestVideoId:
    def test_parse_and_format(self):
        v = VideoId.parse("6_3_20_5")
        assert (v.phone, v.session, v.user, v.file) == (6, 3, 20, 5)
        assert str(v) == "6_3_20_5" and v.subject == "20"
        assert VideoId.parse("Train_files/1_2_03_1.avi") == VideoId(1, 2, 3, 1)

    @pytest.mark.parametrize("file,kind,instrument,label", [
        (1, "bona fide", "live", 1), (2, "print", "print1", -1), (3, "print", "print2", -1),
        (4, "replay", "replay1", -2), (5, "replay", "replay2", -2)])
    def test_kinds(self, file, kind, instrument, label):
        v = VideoId(1, 1, 1, file)
        assert (v.kind, v.instrument, v.official_label, v.is_live) == (kind, instrument, label, file == 1)

    @pytest.mark.parametrize("bad", ["7_1_01_1", "1_4_01_1", "1_1_1_1", "1_1_01_6", "p1_0_3", ""])
    def test_rejects_malformed(self, bad):
        with pytest.raises(ValueError, match="P_S_UU_F"):
            VideoId.parse(bad)


@pytest.fixture(scope="module")
def lists(shared_dir):
    """The real OULU-NPU Protocol 1 lists from ../shared, by split."""
    root = shared_dir / "data" / "oulu_protocols"
    return {s: protocol_lists.read_protocol(protocol_lists.protocol_path(root, 1, s)) for s in protocol_lists.SPLITS}


class TestRealProtocol1:
    def test_row_and_label_counts(self, lists):
        """1200/899/600 rows; Train and Dev attacks are -1, Test separates print -1 and replay -2."""
        counts = {s: Counter(r.label for r in rows) for s, rows in lists.items()}
        assert counts["Train"] == {1: 240, -1: 960}
        assert counts["Dev"] == {1: 180, -1: 719}
        assert counts["Test"] == {1: 120, -1: 240, -2: 240}

    def test_dev_lacks_one_video(self, lists):
        """Dev.txt misses 1_1_22_3; everything else is exactly what the protocol definition yields."""
        for split, rows in lists.items():
            expected = [r.format() for r in protocol_lists.official_rows(ALL_VIDEOS, 1, split)]
            got = [r.format() for r in rows]
            missing = sorted(set(expected) - set(got))
            assert missing == (["-1,1_1_22_3"] if split == "Dev" else [])
            assert got == [e for e in expected if e not in missing]  # same order too

    def test_users_and_sessions(self, lists):
        users = {s: {VideoId.parse(r.video).user for r in rows} for s, rows in lists.items()}
        assert users["Train"] == set(range(1, 21)) and users["Dev"] == set(range(21, 36))
        assert users["Test"] == set(range(36, 56))
        assert {VideoId.parse(r.video).session for r in lists["Test"]} == {3}


class TestMalformedRows:
    @pytest.mark.parametrize("line,msg", [
        ("+1 1_1_01_1", "expected '<label>,<video>'"),
        ("+1,1_1_01_1,extra", "expected '<label>,<video>'"),
        ("live,1_1_01_1", "not an integer"),
        ("+1,1_1_1_1", "P_S_UU_F"),
        ("-1,1_1_01_1", "contradicts"),
        ("+1,", "expected '<label>,<video>'"),
    ])
    def test_error_names_file_and_line(self, tmp_path, line, msg):
        path = tmp_path / "Train.txt"
        path.write_text("+1,1_1_01_1\n" + line + "\n")
        with pytest.raises(ProtocolError, match=msg) as e:
            protocol_lists.read_protocol(path)
        assert f"{path}:2" in str(e.value)

    def test_missing_and_empty_files(self, tmp_path):
        with pytest.raises(ProtocolError, match="not found"):
            protocol_lists.read_protocol(tmp_path / "nope.txt")
        (tmp_path / "empty.txt").write_text("\n")
        with pytest.raises(ProtocolError, match="no rows"):
            protocol_lists.read_protocol(tmp_path / "empty.txt")

    def test_generated_rows_and_other_datasets(self, tmp_path):
        """Generated rows (p...) pass; non-OULU names pass when id checking is off."""
        path = tmp_path / "Train_g.txt"
        path.write_text("+1,1_1_01_1\n1,p1_1_0\n0,p1_0_0\n")
        rows = protocol_lists.read_protocol(path)
        assert [r.generated for r in rows] == [False, True, True]
        assert [r.is_live for r in rows] == [True, True, False]
        path.write_text("1,client001_session01\n-1,attack_print_client001\n")
        assert len(protocol_lists.read_protocol(path, oulu_ids=False)) == 2

    def test_released_train_g_names(self, tmp_path):
        """The released Train_g.txt names its generated folders p1_0_0_k (spoof) and p1_0_1_k (live),
        k = 0..349 (spec 2.2, 2.6): accepted as generated rows, whose label says live or spoof."""
        path = tmp_path / "Train_g.txt"
        path.write_text("+1,1_1_01_1\n-1,1_1_01_2\n1,p1_0_1_17\n0,p1_0_0_349\n0,p1_0_0_0\n1,p1_0_1_0\n")
        rows = protocol_lists.read_protocol(path)
        assert [r.generated for r in rows] == [False, False, True, True, True, True]
        assert [r.is_live for r in rows[2:]] == [True, False, False, True]
        for not_generated in ("p1_0_2_3", "p1_0_1_", "p1_1_1_1_1", "pX_0_1_3"):
            assert not protocol_lists.is_generated(not_generated), not_generated


class TestProtocols:
    @pytest.mark.parametrize("name,expected", [("1", (1, None)), ("2", (2, None)), ("3_2", (3, 2)),
                                               ("P4_6", (4, 6)), ("Protocol_3_1", (3, 1)), ("4.3", (4, 3))])
    def test_parse_names(self, name, expected):
        assert protocol_lists.parse_protocol_name(name) == expected

    @pytest.mark.parametrize("bad", ["5", "3", "1_2", "3_7", "x"])
    def test_parse_bad_names(self, bad):
        with pytest.raises(ValueError):
            protocol_lists.parse_protocol_name(bad)

    def test_paths(self, tmp_path):
        assert protocol_lists.protocol_path(tmp_path, 3, "Dev", 4) == tmp_path / "Protocol_3" / "Dev_4.txt"
        assert protocol_lists.protocol_path(tmp_path, 1, "Test") == tmp_path / "Protocol_1" / "Test.txt"
        assert len(protocol_lists.all_protocol_names()) == 14

    @pytest.mark.parametrize("protocol,sub,counts", [
        # (bona fide, attacks) for Train / Dev / Test, from the protocol design.
        (1, None, [(240, 960), (180, 720), (120, 480)]),
        (2, None, [(360, 720), (270, 540), (360, 720)]),
        (3, 2, [(300, 1200), (225, 900), (60, 240)]),
        (4, 5, [(200, 400), (150, 300), (20, 40)]),
    ])
    def test_membership_counts(self, protocol, sub, counts):
        for split, (live, attacks) in zip(protocol_lists.SPLITS, counts):
            rows = protocol_lists.official_rows(ALL_VIDEOS, protocol, split, sub)
            assert (sum(r.is_live for r in rows), sum(not r.is_live for r in rows)) == (live, attacks)

    def test_unseen_conditions(self):
        """P2/P4 test on the second printer and display; P3/P4 test on the left-out phone."""
        test4 = [VideoId.parse(r.video) for r in protocol_lists.official_rows(ALL_VIDEOS, 4, "Test", 5)]
        train4 = [VideoId.parse(r.video) for r in protocol_lists.official_rows(ALL_VIDEOS, 4, "Train", 5)]
        assert {v.file for v in test4} == {1, 3, 5} and {v.file for v in train4} == {1, 2, 4}
        assert {v.phone for v in test4} == {5} and 5 not in {v.phone for v in train4}
        assert {v.session for v in test4} == {3} and {v.session for v in train4} == {1, 2}
        labels = Counter(r.label for r in protocol_lists.official_rows(ALL_VIDEOS, 2, "Test"))
        assert labels == {1: 360, -1: 360, -2: 360}
