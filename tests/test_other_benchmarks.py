"""Tests for data/other_benchmarks.py and the named-protocol / adapted-id side of data/protocol_lists.py."""
from __future__ import annotations

import pytest

from data import protocol_lists
from data.other_benchmarks import (BENCHMARKS, AdaptedId, held_out_instrument, is_adapted_id, named_protocol_names,
                            parse_named_protocol, subprotocol_names)


class TestAdaptedIds:
    def test_round_trip_and_properties(self):
        """An id parses into its four fields, prints back, and knows its kind, label and spoof code."""
        a = AdaptedId.parse("Test_files/SIW_032_replay2_032-1-3-2-1.mov")
        assert (a.dataset, a.subject, a.instrument, a.clip) == ("SIW", "032", "replay2", "032-1-3-2-1")
        assert str(a) == "SIW_032_replay2_032-1-3-2-1"
        assert (a.is_live, a.kind, a.label, a.spoof_code) == (False, "replay", -2, 5)
        live = AdaptedId("CASIA", "tr07", "live", "high")
        assert (live.is_live, live.label, live.spoof_code) == (True, 1, 1)
        assert AdaptedId("CASIA", "tr07", "cut", "low").label == -1  # a cut photo is a print
        assert AdaptedId("REPLAY", "001", "highdef", "fixed-s01-video-adverse").label == -2

    def test_spoof_codes_follow_the_instrument_order(self):
        """Codes are 2 + the instrument's position, the same for every video of a dataset."""
        for b in BENCHMARKS.values():
            codes = [AdaptedId(b.tag, "1", name, "x").spoof_code for name in b.instrument_names]
            assert codes == list(range(2, 2 + len(b.instruments)))

    @pytest.mark.parametrize("bad,msg", [
        ("SIW_032_replay9_x", "no instrument"),
        ("OULU_01_live_x", "unknown dataset tag"),
        ("SIW_0_32_live_x", "adapted video id of the form"),
        ("siw_032_live_x", "adapted video id of the form"),
        ("SIW_032_live_", "adapted video id of the form"),
    ])
    def test_bad_ids(self, bad, msg):
        with pytest.raises(ValueError, match=msg):
            AdaptedId.parse(bad)

    def test_no_id_family_is_mistaken_for_another(self):
        """OULU ids, adapted ids and generated rows are told apart in every direction."""
        oulu_id, adapted, generated = "1_1_01_1", "SIW_032_live_032-1-1-1-1", "psiw_2_3_1_4"
        assert not protocol_lists.is_generated(oulu_id) and not protocol_lists.is_generated(adapted)
        assert protocol_lists.is_generated(generated)
        assert not is_adapted_id(oulu_id) and is_adapted_id(adapted) and not is_adapted_id(generated)
        for g in ("p1_0_17", "p3_2_1_0", "pcasia_0_12", "preplay_1_0"):
            assert protocol_lists.is_generated(g), g
        for not_g in ("p1_2_17", "p1_0_x", "pSIW_0_1", "person_1", "p", "p5_0_1_"):
            assert not protocol_lists.is_generated(not_g), not_g

    def test_describe_video(self):
        """Subject, bona fide flag and generator code for both id families; other names are refused."""
        assert protocol_lists.describe_video("2_3_41_4") == protocol_lists.VideoInfo("41", False, 4)
        info = protocol_lists.describe_video("REPLAY_007_live_s01-adverse-1")
        assert info == protocol_lists.VideoInfo("007", True, 1)
        assert protocol_lists.describe_video("CASIA_te12_video_normal") == protocol_lists.VideoInfo("te12", False, 4)
        with pytest.raises(ValueError, match="neither an OULU-NPU video id"):
            protocol_lists.describe_video("client001_session01")


class TestNamedProtocols:
    @pytest.mark.parametrize("name,expected", [
        ("siw_1", ("siw_1", None)), ("siw_2_4", ("siw_2", 4)), ("SIW_3_1", ("siw_3", 1)),
        ("casia", ("casia", None)), ("Protocol_replay", ("replay", None)), ("3_2", (3, 2)), ("1", (1, None)),
    ])
    def test_parse(self, name, expected):
        assert protocol_lists.parse_protocol_name(name) == expected

    @pytest.mark.parametrize("bad,msg", [
        ("siw_2", "4 sub-protocols"), ("siw_3_3", "1..2"), ("casia_1", "no sub-protocols"),
        ("siw_4", "unknown protocol"), ("oulu", "unknown protocol"), ("siwm", "13 sub-protocols"),
        ("siwm_14", "1..13"),
    ])
    def test_bad_names_say_what_exists(self, bad, msg):
        with pytest.raises(ValueError, match=msg):
            protocol_lists.parse_protocol_name(bad)

    def test_paths_and_tags(self, tmp_path):
        """Named protocols live in Protocol_<name>/ and tag generated folders by their full name."""
        assert protocol_lists.protocol_path(tmp_path, "siw_2", "Dev", 3) == tmp_path / "Protocol_siw_2" / "Dev_3.txt"
        assert protocol_lists.protocol_path(tmp_path, "casia", "Train") == tmp_path / "Protocol_casia" / "Train.txt"
        assert protocol_lists.protocol_tag("siw_2", 3) == "siw_2_3"
        assert protocol_lists.protocol_tag("replay") == "replay"
        names = named_protocol_names()
        assert names[:3] == ["siw_1", "siw_2_1", "siw_2_2"] and len(names) == 1 + 4 + 2 + 13 + 2
        assert all(protocol_lists.protocol_tag(*protocol_lists.parse_protocol_name(n)) == n for n in names)
        assert protocol_lists.is_generated(f"p{names[2]}_0_3")
        assert parse_named_protocol("2") is None

    @pytest.mark.parametrize("name,expected", [
        ("3", [f"3_{k}" for k in range(1, 7)]), ("4", [f"4_{k}" for k in range(1, 7)]), ("1", ["1"]), ("3_2", ["3_2"]),
        ("siw_2", ["siw_2_1", "siw_2_2", "siw_2_3", "siw_2_4"]), ("siw_3", ["siw_3_1", "siw_3_2"]),
        ("siw_1", ["siw_1"]), ("casia", ["casia"]), ("siw_2_3", ["siw_2_3"]),
        ("siwm", [f"siwm_{k}" for k in range(1, 14)]), ("siwm_13", ["siwm_13"]),
    ])
    def test_expand_families(self, name, expected):
        """A protocol family names its sub-protocols in order; anything else names itself."""
        assert protocol_lists.expand_protocol(name) == expected

    def test_expand_refuses_unknown_names(self):
        with pytest.raises(ValueError, match="unknown protocol"):
            protocol_lists.expand_protocol("siw_9")


class TestSiwm:
    def test_thirteen_types_in_the_papers_order_with_their_kinds(self):
        """siwm_k leaves out the k-th type of the DTN table; masks, makeup and partial attacks get labels -3..-5,
        which the metrics name; the generator's classes are 0..12."""
        b = BENCHMARKS["SIWM"]
        assert b.instrument_names[:3] == ("replay", "print", "halfmask") and len(b.instruments) == 13
        assert [held_out_instrument(f"siwm_{k}") for k in (1, 2, 7, 8, 13)] == [
            "replay", "print", "mannequin", "obfuscation", "partialpaper"]
        assert held_out_instrument("siw_2_1") is None and held_out_instrument("3_1") is None
        assert subprotocol_names(["siwm_3", "siw_2_1", "4_2"]) == ["halfmask", "siw_2_1", "4_2"]
        ids = [AdaptedId("SIWM", "unknown", i, "x") for i in ("silicone", "impersonation", "paperglasses", "print")]
        assert [(a.kind, a.label, protocol_lists.label_kind(a.label)) for a in ids] == [
            ("mask", -3, "mask"), ("makeup", -4, "makeup"), ("partial", -5, "partial"), ("print", -1, "print")]
        assert AdaptedId("SIWM", "unknown", "partialpaper", "x").spoof_code == 14  # class 12 of 13
        assert protocol_lists.label_kind(-6) == "instrument -6"


class TestListsWithAdaptedIds:
    def test_rows_are_checked_like_oulu_rows(self, tmp_path):
        """Adapted ids pass the id check; a label that contradicts the instrument names file and line."""
        path = tmp_path / "Train.txt"
        path.write_text("+1,SIW_032_live_032-1-1-1-1\n-1,SIW_032_print1_032-1-2-1-1\n-2,SIW_032_replay1_x\n"
                        "1,psiw_1_1_0\n0,psiw_1_0_0\n")
        rows = protocol_lists.read_protocol(path)
        assert [r.is_live for r in rows] == [True, False, False, True, False]
        assert [r.generated for r in rows] == [False] * 3 + [True] * 2
        path.write_text("+1,SIW_032_live_a\n+1,SIW_032_print1_b\n")
        with pytest.raises(protocol_lists.ProtocolError,
                           match=f"{path}:2: .*contradicts.*instrument print1 is an attack"):
            protocol_lists.read_protocol(path)
        path.write_text("-1,Attack_print_client001\n")
        with pytest.raises(protocol_lists.ProtocolError, match="neither an OULU-NPU video id"):
            protocol_lists.read_protocol(path)
