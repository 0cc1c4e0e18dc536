"""Fuzzing the ingestion boundary with Hypothesis.

A small valid file (pydicom's ``MR_small.dcm``, or a small synthetic T2 series) is broken
in every way a peer or a disk can break it: truncated, bytes flipped or inserted, element
lengths overwritten with absurd values, UIDs full of path characters, UIDs missing,
garbage preambles. ``InstanceStore.store_file`` must either store the file inside its
archive and index it exactly once, or refuse it with one of the node's own errors naming
the UID or the file, leaving nothing behind. ``load_series`` must either load a correct
volume or raise :class:`SeriesLoadError`.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydicom import config as dicom_config
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from service.db import Instance, make_engine, make_sessionmaker, upgrade
from service.errors import DatasetMismatchError, IngestError, SeriesLoadError, StorageError
from service.imaging import LoadedSeries, group_by_series, load_series
from service.storage import InstanceStore
from service.storage.layout import INCOMING_DIR

BASE = Path(get_testdata_file("MR_small.dcm")).read_bytes()
BASE_DS = pydicom.dcmread(io.BytesIO(BASE))
BASE_SOP_UID = str(BASE_DS.SOPInstanceUID)
MR_CLASS = str(BASE_DS.SOPClassUID)
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
UID_KEYWORDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
#: VRs with a 4-byte length field in explicit VR encoding (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
#: Examples per run multiply by this (e.g. KIDNEY_NODE_FUZZ_SCALE=20 for a long local soak).
SCALE = int(os.environ.get("KIDNEY_NODE_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=150 * SCALE, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Field:
    """Where one top-level element's VR and length fields lie in the encoded file."""

    tag: int
    vr_offset: int
    length_offset: int
    length_width: int


def _fields(data: bytes) -> list[Field]:
    """The VR and length fields of every top-level element of ``data`` (explicit VR LE)."""
    fields: list[Field] = []
    pos = 132
    while data[pos:pos + 2] == b"\x02\x00":  # file meta, walked by hand
        tag = struct.unpack_from("<HH", data, pos)
        long = data[pos + 4:pos + 6] in _LONG_VRS
        width = 4 if long else 2
        fields.append(Field((tag[0] << 16) | tag[1], pos + 4, pos + (8 if long else 6), width))
        length = struct.unpack_from("<I" if long else "<H", data, fields[-1].length_offset)[0]
        pos += (12 if long else 8) + length
    ds = pydicom.dcmread(io.BytesIO(data))
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if not hasattr(raw, "value_tell"):  # already converted while reading (charset)
            continue
        width = 4 if raw.VR.encode() in _LONG_VRS else 2
        length_offset = raw.value_tell - width
        fields.append(Field(int(tag), length_offset - (4 if width == 4 else 2), length_offset,
                            width))
    return fields


FIELDS = _fields(BASE)


def _field_index(keyword: str) -> int:
    tag = int(tag_for_keyword(keyword))
    return next(i for i, f in enumerate(FIELDS) if f.tag == tag)


# ------------------------------------------------------------------------ strategies

#: UID values a hostile or broken peer may send.
NASTY_UIDS = st.one_of(
    st.sampled_from([
        "", " ", "..", ".", "../", "../../../../tmp/evil", "/", "/etc/passwd", "\\",
        "..\\..\\x", "1.2\x00.3", "\x00", "1.2.3/../../..", "1." + "2" * 300, "1.2.3 ",
        "1.2.3\\1.2.4", "C:\\windows", "~", "1.2.3\n4", "é.1",
    ]),
    st.text(alphabet=st.sampled_from("0123456789./\\\x00 -_"), min_size=0, max_size=80),
    st.text(max_size=100),
    st.binary(max_size=80).map(lambda raw: raw.decode("latin-1")),
)


@dataclass(frozen=True)
class HeaderChange:
    """Set (or, with ``value`` None, delete) one identifying UID before encoding."""

    keyword: str
    value: str | None

    def apply(self, ds: Dataset) -> None:
        if self.value is None:
            if self.keyword in ds:
                delattr(ds, self.keyword)
        else:  # any bytes on the wire: the UTF-8 of the text, one latin-1 char per byte
            setattr(ds, self.keyword,
                    self.value.encode("utf-8", "surrogatepass").decode("latin-1"))


HEADER_CHANGES = st.builds(
    HeaderChange,
    st.sampled_from(UID_KEYWORDS),
    st.one_of(st.none(), NASTY_UIDS),
)

#: A byte-level mutation: a function of the encoded bytes.
ByteMutation = Callable[[bytes], bytes]


def _truncate(at: int) -> ByteMutation:
    return lambda data: data[: at % (len(data) + 1)]


def _flip(at: int, mask: int) -> ByteMutation:
    def mutate(data: bytes) -> bytes:
        if not data:
            return data
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]

    return mutate


def _insert(at: int, junk: bytes) -> ByteMutation:
    return lambda data: data[: at % (len(data) + 1)] + junk + data[at % (len(data) + 1):]


def _length(field: int, value: int) -> ByteMutation:
    offset, width = FIELDS[field].length_offset, FIELDS[field].length_width

    def mutate(data: bytes) -> bytes:
        if offset + width > len(data):
            return data
        packed = struct.pack("<I", value) if width == 4 else struct.pack("<H", value & 0xFFFF)
        return data[:offset] + packed + data[offset + width:]

    return mutate


def _vr(field: int, vr: bytes) -> ByteMutation:
    offset = FIELDS[field].vr_offset
    return lambda data: data[:offset] + vr + data[offset + 2:] if len(data) > offset else data


def _preamble(junk: bytes, magic: bytes) -> ByteMutation:
    return lambda data: junk.ljust(128, b"\xff")[:128] + magic + data[132:]


BYTE_MUTATIONS = st.one_of(
    st.builds(_truncate, st.integers(0, len(BASE))),
    st.builds(_flip, st.integers(0, len(BASE)), st.integers(1, 255)),
    st.builds(_insert, st.integers(0, len(BASE)), st.binary(min_size=1, max_size=16)),
    st.builds(_vr, st.integers(0, len(FIELDS) - 1),
              st.sampled_from([b"FD", b"UL", b"US", b"SQ", b"OB", b"UN", b"AT", b"XX", b"\0\0"])),
    st.builds(_length, st.integers(0, len(FIELDS) - 1), st.one_of(
        st.sampled_from([0, 1, 2, 0xFFFF, 0xFFFE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                         0xFFFFFFFF, len(BASE), len(BASE) + 1]),
        st.integers(0, 0xFFFFFFFF))),
    st.builds(_preamble, st.binary(max_size=128),
              st.sampled_from([b"DICM", b"DICX", b"\x00\x00\x00\x00", b"dicm"])),
    st.just(lambda data: data[132:]),  # no preamble, no magic
    st.just(lambda data: data[:132] + data[132 + 12 + 4:]),  # no group length element
)


@contextmanager
def _lenient() -> Iterator[None]:
    """pydicom writes invalid values as they are, and warns about nothing."""
    old = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        dicom_config.settings.writing_validation_mode = old


def _encode(changes: list[HeaderChange]) -> tuple[bytes, str]:
    """MR_small with ``changes`` applied; returns the bytes and the SOP Instance UID an
    SCU would announce for it."""
    ds = pydicom.dcmread(io.BytesIO(BASE))
    with _lenient():
        for change in changes:
            change.apply(ds)
        out = io.BytesIO()
        ds.save_as(out)
    announced = str(ds.get("SOPInstanceUID", "") or "") or BASE_SOP_UID
    return out.getvalue(), announced


# ------------------------------------------------------------------------ store_file


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite index at head, copied for every example."""
    path = tmp_path_factory.mktemp("fuzz-db") / "index.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@dataclass
class Sandbox:
    """One example's world: an input folder, an archive and its own index."""

    base: Path
    inbox: Path
    store: InstanceStore

    def files(self) -> set[Path]:
        return {p for p in self.base.rglob("*") if p.is_file()
                and not p.name.startswith("index.sqlite")}

    def archive_files(self) -> set[Path]:
        return {p for p in self.store.root.rglob("*") if p.is_file()}

    def rows(self) -> list[tuple[str, str]]:
        with self.store.sessions() as s:
            rows = s.execute(select(Instance.sop_instance_uid, Instance.path)).all()
            return [(uid, path) for uid, path in rows]


Sandboxes = Callable[[], AbstractContextManager[Sandbox]]


@pytest.fixture(scope="module")
def sandboxes(migrated_template: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Sandboxes:
    """A factory of fresh sandboxes (module-scoped, so Hypothesis may share it)."""
    parent = tmp_path_factory.mktemp("fuzz")

    @contextmanager
    def make() -> Iterator[Sandbox]:
        base = Path(tempfile.mkdtemp(dir=parent))
        db = base / "index.sqlite"
        shutil.copyfile(migrated_template, db)
        engine = make_engine(f"sqlite:///{db}")
        try:
            inbox = base / "inbox"
            inbox.mkdir()
            yield Sandbox(base, inbox, InstanceStore(base / "archive", make_sessionmaker(engine)))
        finally:
            engine.dispose()
            shutil.rmtree(base, ignore_errors=True)

    return make


def _check_store(box: Sandbox, data: bytes, expected_uid: str | None,
                 expected_class: str | None) -> str:
    """Run store_file on ``data`` and check the property; returns the outcome's name."""
    src = box.inbox / "received.dcm"
    src.write_bytes(data)
    before = box.files()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about what it reads leniently
        try:
            stored = box.store.store_file(src, expected_sop_uid=expected_uid,
                                          expected_sop_class=expected_class)
        except (IngestError, StorageError) as exc:
            message = str(exc)
            assert message.startswith("instance "), message
            if expected_uid is not None:
                assert expected_uid in message, message
            elif isinstance(exc, IngestError):
                assert str(src) in message, message
            assert box.rows() == [], "a refused instance was indexed"
            assert box.archive_files() == set(), f"left in the archive: {box.archive_files()}"
            assert box.files() == before, "files appeared or vanished outside the archive"
            if isinstance(exc, IngestError):
                assert src.read_bytes() == data, "a refused file was not left where it was"
            return type(exc).__name__
    # Stored: inside the root, on disk with the bytes received, indexed exactly once.
    assert stored.path.resolve().is_relative_to(box.store.root)
    assert INCOMING_DIR not in stored.path.relative_to(box.store.root).parts
    assert stored.path.read_bytes() == data
    assert not src.exists()
    if expected_uid is not None:
        assert stored.sop_instance_uid == expected_uid
    rows = box.rows()
    assert [uid for uid, _ in rows] == [stored.sop_instance_uid]
    assert box.store.path_of(rows[0][1]) == stored.path
    assert box.archive_files() == {stored.path}, "stray files in the archive"
    assert box.files() == (before - {src}) | {stored.path}, "a file outside the archive"
    with box.store.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
    return "stored"


@FUZZ
@given(changes=st.lists(HEADER_CHANGES, max_size=3),
       mutations=st.lists(BYTE_MUTATIONS, max_size=3),
       announce=st.sampled_from(["dataset", "none", "other"]),
       sop_class=st.sampled_from([None, MR_CLASS, CT_CLASS]))
@example(changes=[], mutations=[], announce="dataset", sop_class=MR_CLASS)
@example(changes=[HeaderChange("StudyInstanceUID", "../../../../tmp/evil"),
                  HeaderChange("SOPInstanceUID", "/etc/passwd\x00")],
         mutations=[], announce="dataset", sop_class=None)
@example(changes=[HeaderChange("SeriesInstanceUID", None)], mutations=[], announce="none",
         sop_class=None)
@example(changes=[], mutations=[_length(len(FIELDS) - 1, 0xFFFFFFFE)],
         announce="dataset", sop_class=None)
@example(changes=[], mutations=[_truncate(400)], announce="dataset", sop_class=None)
# Found by this test: a group length of 1 byte made pydicom raise BytesLengthException,
# which escaped read_header (and the SCP's handler) instead of becoming an IngestError.
@example(changes=[], mutations=[_length(0, 1)], announce="dataset", sop_class=None)
# Found by this test: a Patient ID whose VR says FD (8-byte floats) raised
# BytesLengthException from InstanceHeader.from_dataset, outside read_header's checks.
@example(changes=[], mutations=[_vr(_field_index("PatientID"), b"FD")], announce="none",
         sop_class=None)
# Found by this test: a file cut inside its file meta, 2 bytes into an element's tag, made
# pydicom raise struct.error, which escaped read_header.
@example(changes=[], mutations=[_truncate(250)], announce="dataset", sop_class=None)
def test_store_file_stores_inside_the_root_or_refuses_cleanly(
    sandboxes: Sandboxes, changes: list[HeaderChange],
    mutations: list[ByteMutation], announce: str, sop_class: str | None,
) -> None:
    data, announced = _encode(changes)
    for mutate in mutations:
        data = mutate(data)
    expected = {"dataset": announced, "none": None, "other": "1.2.826.0.1.3680043.8.498.9"}
    with sandboxes() as box:
        outcome = _check_store(box, data, expected[announce], sop_class)
    event(outcome)
    if not changes and not mutations and sop_class != CT_CLASS and announce != "other":
        assert outcome == "stored"  # the unbroken file goes in: the property is not vacuous


def test_refusals_keep_their_subclass(sandboxes: Sandboxes) -> None:
    """The SCP maps DatasetMismatchError (0xA900) apart from other IngestErrors (0xC000)."""
    with sandboxes() as box:
        assert _check_store(box, BASE, "1.2.3.4", None) == DatasetMismatchError.__name__
        assert _check_store(box, BASE[:200], "1.2.3.4", None) == IngestError.__name__


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("keyword", "value"), [
    ("StudyInstanceUID", "1." + "2" * 100),
    ("SeriesInstanceUID", "1.2\x003"),
    ("SOPInstanceUID", "1.2.3." + "4" * 60),
])
def test_uids_the_index_cannot_hold_are_refused_on_every_database(
    tmp_path: Path, database_url: str, keyword: str, value: str,
) -> None:
    """Found with the fuzzer's UIDs on PostgreSQL: an overlong or NUL-holding UID failed to
    index there (StorageError, 0xA700: the sender retries forever) where SQLite took it."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        store = InstanceStore(tmp_path / "archive", make_sessionmaker(engine))
        data, _ = _encode([HeaderChange(keyword, value)])
        src = tmp_path / "received.dcm"
        src.write_bytes(data)
        with pytest.raises(IngestError, match=f"{keyword} longer than 64 characters") as info:
            store.store_file(src, expected_sop_uid=BASE_SOP_UID)
        assert BASE_SOP_UID in str(info.value) and src.exists()
        with store.sessions() as s:
            assert s.scalar(select(func.count(Instance.id))) == 0
        assert not [p for p in store.root.rglob("*") if p.is_file()]
    finally:
        engine.dispose()


# ------------------------------------------------------------------------ load_series


@pytest.fixture(scope="module")
def small_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The T2 series (5 slices of 16 x 16) of a small synthetic study."""
    from service.synthetic import write_mr_study

    study = write_mr_study(tmp_path_factory.mktemp("fuzz-series"), seed=1, shape=(5, 16, 16),
                           phases=3)
    return group_by_series(study.files)[study.t2_series_uid]


#: Header values worth trying per attribute (None deletes the attribute).
_BAD_VALUES: dict[str, list[object]] = {
    "ImagePositionPatient": [None, [0, 0], [0, 0, 0, 0], ["nan", 0, 0], ["inf", 0, 0],
                             [1e308, 0, 0], "abc", [0, 0, 0]],
    "ImageOrientationPatient": [None, [0] * 6, [1, 0, 0, 1, 0, 0], ["nan"] * 6,
                                [1, 0, 0, 0, 1], [1, 0, 0, 0, 1, 0, 0], [0, 1, 0, 1, 0, 0]],
    "PixelSpacing": [None, [0, 0], [-1, 1], ["nan", 1], ["inf", 1], [1], [1, 1, 1], [1e-300, 1]],
    "Rows": [None, 0, 1, 17, 65535],
    "Columns": [None, 0, 1, 15, 65535],
    "BitsAllocated": [None, 0, 1, 7, 8, 32, 64],
    "BitsStored": [None, 0, 17, 64],
    "HighBit": [None, 40],
    "PixelRepresentation": [None, 1, 2],
    "SamplesPerPixel": [None, 0, 3],
    "PhotometricInterpretation": [None, "RGB", "PALETTE COLOR", "YBR_FULL", "XYZ"],
    "RescaleSlope": [None, "nan", "inf", 0, "1e308"],
    "RescaleIntercept": ["nan", "-inf"],
    "NumberOfFrames": [0, 2, "x"],
    "FrameOfReferenceUID": [None, "1.2.3"],
    "SeriesInstanceUID": [None, "1.2.3", "../x"],
    "SOPInstanceUID": [None],
    "SOPClassUID": [None, "1.2.840.10008.5.1.4.1.1.4.1"],
    "TemporalPositionIdentifier": [1, 2, "x"],
    "TriggerTime": ["x", "nan"],
    "PixelData": [None, b"", b"\x00" * 100, b"\x00" * 10_000],
}

HEADER_EDITS = st.sampled_from(sorted(_BAD_VALUES)).flatmap(
    lambda keyword: st.tuples(st.just(keyword), st.sampled_from(_BAD_VALUES[keyword])))


def _edit(ds: Dataset, keyword: str, value: object) -> None:
    """Delete ``keyword`` (value None) or write ``value`` as is, even if invalid for its VR."""
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag).split(" or ")[-1]  # PixelData: OB or OW
    ds[tag] = DataElement(tag, vr, value, already_converted=True)


def _check_loaded(series: LoadedSeries, n_files: int) -> None:
    """A load that did not raise must be a sound volume."""
    assert series.volumes, "no volume"
    for volume in series.volumes:
        image = volume.image
        columns, rows, slices = image.GetSize()
        assert slices == len(volume.datasets) >= 3
        assert slices <= n_files
        ds = volume.datasets[0]
        assert (rows, columns) == (int(ds.Rows), int(ds.Columns))
        assert all(math.isfinite(v) and v > 0 for v in image.GetSpacing()), image.GetSpacing()
        assert all(math.isfinite(v) for v in image.GetOrigin()), image.GetOrigin()
        direction = np.array(image.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-3)
        assert np.isfinite(sitk.GetArrayViewFromImage(image)).all(), "non-finite pixels"


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 4), HEADER_EDITS), min_size=1, max_size=3),
       everywhere=st.booleans(),
       byte_mutations=st.lists(st.tuples(st.integers(0, 4), BYTE_MUTATIONS), max_size=1))
# Found by this test: NaN pixel spacing loaded as a volume of NaN spacing.
@example(edits=[(0, ("PixelSpacing", ["nan", 1]))], everywhere=True, byte_mutations=[])
@example(edits=[(0, ("ImagePositionPatient", ["nan", 0, 0]))], everywhere=False,
         byte_mutations=[])
# Found by this test: NaN slope and intercept loaded as a volume of NaN pixels.
@example(edits=[(0, ("RescaleIntercept", "nan")), (0, ("RescaleSlope", "nan"))],
         everywhere=False, byte_mutations=[])
@example(edits=[(2, ("RescaleSlope", "1e308"))], everywhere=True, byte_mutations=[])
def test_load_series_loads_a_sound_volume_or_raises_series_load_error(
    small_series: list[Path], tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[int, tuple[str, object]]], everywhere: bool,
    byte_mutations: list[tuple[int, ByteMutation]],
) -> None:
    out = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    try:
        datasets = [pydicom.dcmread(p) for p in small_series]
        paths = [out / f"slice{n}.dcm" for n in range(len(datasets))]
        with _lenient():
            for index, (keyword, value) in edits:
                for ds in datasets if everywhere else [datasets[index]]:
                    _edit(ds, keyword, value)
            for ds, path in zip(datasets, paths, strict=True):
                buffer = io.BytesIO()
                ds.save_as(buffer)
                path.write_bytes(buffer.getvalue())
        for index, mutate in byte_mutations:
            paths[index].write_bytes(mutate(paths[index].read_bytes()))
        with _lenient():
            try:
                series = load_series(paths)
            except SeriesLoadError as exc:
                assert str(exc).startswith("series ") and len(str(exc)) > 20, str(exc)
                event("SeriesLoadError")
                return
        _check_loaded(series, len(paths))
        event("loaded")
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize(("keyword", "vr"), [
    ("SOPInstanceUID", b"TI"),  # unknown VR: pydicom raised NotImplementedError
    ("PatientID", b"FD"),  # 4 bytes as 8-byte floats: BytesLengthException
    ("Rows", b"UL"),  # 2 bytes as a 4-byte integer
])
def test_undecodable_element_is_a_series_load_error(
    small_series: list[Path], tmp_path: Path, keyword: str, vr: bytes,
) -> None:
    """Found by the fuzzer above: an element whose VR does not fit its value escaped
    load_series as a pydicom exception, when read or later (headers go on to the writers)."""
    paths = []
    for n, source in enumerate(small_series):
        data = source.read_bytes()
        if n == 1:
            tag = int(tag_for_keyword(keyword))
            field = next(f for f in _fields(data) if f.tag == tag)
            data = data[:field.vr_offset] + vr + data[field.vr_offset + 2:]
        paths.append(tmp_path / f"slice{n}.dcm")
        paths[-1].write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SeriesLoadError, match=r"slice1\.dcm is not a readable DICOM file"):
            load_series(paths)
