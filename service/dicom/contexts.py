"""Presentation contexts the node accepts and proposes."""

from __future__ import annotations

from pydicom import uid as tsuid
from pydicom.pixels import get_decoder
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from service.imaging.dcmtk_decode import dcmtk_decodes

__all__ = ["QUERY_RETRIEVE", "accepted_transfer_syntaxes", "scp_contexts"]

_UNCOMPRESSED = (
    tsuid.ExplicitVRLittleEndian,
    tsuid.ImplicitVRLittleEndian,
    tsuid.DeflatedExplicitVRLittleEndian,
    tsuid.ExplicitVRBigEndian,
)
_COMPRESSED = (
    tsuid.JPEGBaseline8Bit,
    # Not JPEG Extended (1.2.840.10008.1.2.4.51) here: its 12-bit process 4, the one MR
    # and CT use, is decoded only by the GPLv3 pylibjpeg-libjpeg, which the node does not
    # ship; GDCM and Pillow report the syntax as available but fail on 12-bit data. It is
    # accepted where DCMTK decodes it (service/imaging/dcmtk_decode.py).
    tsuid.JPEGLossless,
    tsuid.JPEGLosslessSV1,
    tsuid.JPEGLSLossless,
    tsuid.JPEGLSNearLossless,
    tsuid.JPEG2000Lossless,
    tsuid.JPEG2000,
    tsuid.HTJ2KLossless,
    tsuid.HTJ2KLosslessRPCL,
    tsuid.HTJ2K,
    tsuid.RLELossless,
)


def accepted_transfer_syntaxes() -> list[str]:
    """Uncompressed syntaxes plus every compressed one an installed pydicom plugin decodes,
    and JPEG Extended where DCMTK's ``dcmdjpeg`` is installed."""
    out = list(_UNCOMPRESSED)
    if dcmtk_decodes(tsuid.JPEGExtended12Bit):
        out.append(tsuid.JPEGExtended12Bit)
    for uid in _COMPRESSED:
        try:
            if get_decoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:
            continue
    return out


#: Query/retrieve, patient root and study root (PS3.4 C.6.1, C.6.2).
QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove,
)


def scp_contexts() -> list[PresentationContext]:
    """Verification, query/retrieve, and every storage SOP class with the accepted
    syntaxes; a storage context takes the roles a C-GET requestor proposes (it acts as
    the storage SCP of the C-GET's sub-operations)."""
    syntaxes = accepted_transfer_syntaxes()
    contexts = []
    for sop_class in (Verification, *QUERY_RETRIEVE):
        cx = PresentationContext()
        cx.abstract_syntax = sop_class
        cx.transfer_syntax = list(_UNCOMPRESSED[:2])
        contexts.append(cx)
    for template in AllStoragePresentationContexts:
        cx = PresentationContext()
        cx.abstract_syntax = template.abstract_syntax
        cx.transfer_syntax = syntaxes
        cx.scu_role, cx.scp_role = True, True
        contexts.append(cx)
    return contexts
