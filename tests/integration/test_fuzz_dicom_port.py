"""A bounded, seeded random-PDU loop against the running node's DICOM port (issue 18):
after every case C-ECHO and a real C-STORE still succeed, and memory stays bounded.

Cases are built from what a real peer sends (an A-ASSOCIATE-RQ, a C-ECHO and a C-STORE
in P-DATA-TF), mutated: bytes flipped, cut, repeated, lengths rewritten, random PDU
types, plain noise; sent whole or in pieces, before or after a real association. A
failure names its case number and seed, so it can be replayed.
"""

from __future__ import annotations

import random
import socket
import time
from io import BytesIO

from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import MRImageStorage, Verification

from tests.peers import NodeProcess, rss_mb

SEED = 20261206
CASES = 160
MR_CX, ECHO_CX = 1, 3


def _association_request() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = "FUZZER", "KIDNEYNODE"
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1"
    primitive.user_information = [length, implementation]
    contexts = [build_context(MRImageStorage, "1.2.840.10008.1.2"), build_context(Verification)]
    for context, context_id in zip(contexts, (MR_CX, ECHO_CX), strict=True):
        context.context_id = context_id
    primitive.presentation_context_definition_list = contexts
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _p_data(message, context_id: int) -> list[bytes]:  # noqa: ANN001 - a DIMSE message
    out = []
    for primitive in message.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out.append(bytes(pdu.encode()))
    return out


def _echo_pdus() -> list[bytes]:
    request = C_ECHO()
    request.MessageID, request.AffectedSOPClassUID = 7, Verification
    message = C_ECHO_RQ()
    message.primitive_to_message(request)
    return _p_data(message, ECHO_CX)


def _store_pdus(dataset_bytes: bytes) -> list[bytes]:
    request = C_STORE()
    request.MessageID, request.Priority = 9, 2
    request.AffectedSOPClassUID = MRImageStorage
    request.AffectedSOPInstanceUID = generate_uid()
    request.DataSet = BytesIO(dataset_bytes)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return _p_data(message, MR_CX)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(6)
        if how == 0 and data:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1 and len(data) > 1:  # cut
            data = data[:rng.randrange(1, len(data))]
        elif how == 2 and data:  # repeat a slice
            start = rng.randrange(len(data))
            data[start:start] = data[start:start + rng.randint(1, 64)] * rng.randint(1, 5)
        elif how == 3 and len(data) >= 6:  # rewrite the PDU length
            length = rng.choice([0, 1, 5, len(data) - 6, len(data) + 100, 0xFFFF, 0xFFFFFFFF])
            data[2:6] = length.to_bytes(4, "big")
        elif how == 4 and len(data) >= 12:  # rewrite a PDV item length
            data[6:10] = rng.choice([0, 1, 2, 0xFFFFFFFF, rng.randrange(1 << 32)]).to_bytes(
                4, "big")
        else:  # random PDU type
            if data:
                data[0] = rng.randrange(256)
    return bytes(data)


def _case(rng: random.Random, request: bytes, echo: list[bytes], store: list[bytes]
          ) -> tuple[str, list[bytes]]:
    """(what, the byte strings to send in order)."""
    kind = rng.randrange(6)
    if kind == 0:
        return "noise", [rng.randbytes(rng.randint(1, 3000))]
    if kind == 1:
        return "mutated association request", [_mutate(request, rng)]
    if kind == 2:
        header = bytes([rng.choice([1, 2, 3, 4, 5, 6, 7, rng.randrange(256)]), 0])
        body = rng.randbytes(rng.randint(0, 200))
        return "header and part of a body", [header + rng.randrange(1 << 32).to_bytes(4, "big")
                                             + body]
    pdus = echo if kind == 3 else store
    chosen = [_mutate(p, rng) if rng.random() < 0.5 else p for p in pdus]
    if rng.random() < 0.3:
        chosen = chosen[:rng.randint(0, len(chosen))]
    return f"association, then mutated {'C-ECHO' if kind == 3 else 'C-STORE'}", \
        [request, *chosen]


def _send(port: int, parts: list[bytes], rng: random.Random) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for part in parts:
            pieces = [part] if rng.random() < 0.7 else \
                [part[i:i + 7] for i in range(0, len(part), 7)]
            for piece in pieces:
                try:
                    sock.sendall(piece)
                except OSError:
                    return  # the node closed the connection: what it may do
            if part is parts[0] and len(parts) > 1:
                try:  # the association's answer, before the P-DATA
                    sock.recv(4096)
                except OSError:
                    return
        sock.settimeout(0.2)
        try:
            sock.recv(65536)
        except OSError:
            return  # silence or a closed connection: both acceptable


def test_random_pdus_leave_the_node_answering_and_its_memory_bounded(
        make_node, sqlite_url, small_study_dir):
    dataset = dcmread(sorted(small_study_dir.files)[0])
    node: NodeProcess = make_node(sqlite_url)
    node.config["scheduler"]["stable_age_seconds"] = 3600  # reception only
    node.config["dicom"]["read_timeout_seconds"] = 2
    node.start()
    assert node.proc is not None
    ae = AE(ae_title="CHECKER")
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)

    def still_works(case: int, what: str) -> None:
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="KIDNEYNODE")
        assert assoc.is_established, f"case {case} ({what}, seed {SEED}): no association"
        try:
            assert assoc.send_c_echo().Status == 0, f"case {case} ({what}): C-ECHO failed"
            dataset.SOPInstanceUID = generate_uid()
            status = assoc.send_c_store(dataset)
            assert status.Status == 0, f"case {case} ({what}): C-STORE got {status}"
        finally:
            assoc.release()

    still_works(-1, "before any case")
    before = rss_mb(node.proc.pid)
    rng = random.Random(SEED)
    request, echo, store = _association_request(), _echo_pdus(), _store_pdus(
        encode(dataset, True, True))
    kinds: dict[str, int] = {}
    for case in range(CASES):
        what, parts = _case(rng, request, echo, store)
        kinds[what] = kinds.get(what, 0) + 1
        _send(node.dicom_port, parts, rng)
        still_works(case, what)
        assert node.proc.poll() is None, f"case {case} ({what}): the node died"
    time.sleep(0.5)
    grown = rss_mb(node.proc.pid) - before
    print(f"{CASES} cases {kinds}: RSS grew {grown:.0f} MB")
    assert grown < 100, f"node RSS grew by {grown:.0f} MB over {CASES} cases"
