"""Presentation contexts the node accepts and proposes."""

from __future__ import annotations

from pydicom import uid as tsuid
from pydicom.pixels import get_decoder
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import Verification

from service.imaging.dcmtk_decode import dcmtk_decodes

__all__ = ["accepted_transfer_syntaxes", "scp_contexts"]

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


def scp_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class, each with the accepted syntaxes."""
    syntaxes = accepted_transfer_syntaxes()
    contexts = []
    verification = PresentationContext()
    verification.abstract_syntax = Verification
    verification.transfer_syntax = list(_UNCOMPRESSED[:2])
    contexts.append(verification)
    for template in AllStoragePresentationContexts:
        cx = PresentationContext()
        cx.abstract_syntax = template.abstract_syntax
        cx.transfer_syntax = syntaxes
        contexts.append(cx)
    return contexts
