"""``chunkcrypt.SealedOutput``: muxers write encrypted files through it, seeking back to patch
headers, and what comes out decrypts to a file PyAV reads as it would the plaintext one."""

from __future__ import annotations

import io
import secrets
from fractions import Fraction
from pathlib import Path

import av
import pytest

from shared import chunkcrypt
from shared.chunkcrypt.seekable import SealedOutput

RID = "rec_0123456789abcdef01234567"


def plain(path: Path, key: bytes, name: str) -> bytes:
    with path.open("rb") as fh:
        return b"".join(chunkcrypt.decrypt_stream(fh, key, recording_id=RID, name=name))


def encode_webm(fileobj: object, frames: int = 50) -> None:
    with av.open(fileobj, "w", format="webm", container_options={"fflags": "+bitexact"}) as out:
        st = out.add_stream("libvpx", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.time_base = Fraction(1, 25)
        for i in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 5) % 256]) * plane.buffer_size)
            frame.pts = i
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)


@pytest.mark.parametrize(
    ("chunk", "head", "window", "resealed"), [(1024, 1 << 20, 1 << 20, False), (16, 16, 16, True)]
)
def test_a_muxer_writes_through_it_and_the_plaintext_is_the_same_file(
    tmp_path: Path, chunk: int, head: int, window: int, resealed: bool
) -> None:
    key = secrets.token_bytes(32)
    reference = io.BytesIO()
    encode_webm(reference)
    out = SealedOutput(
        tmp_path / "a.webm",
        key,
        recording_id=RID,
        name="out/a.webm",
        chunk_size=chunk,
        head=head,
        window=window,
    )
    with out:
        encode_webm(out)
    assert out.closed and out.resealed is resealed
    data = (tmp_path / "a.webm").read_bytes()
    assert b"webm" not in data and b"\x1a\x45\xdf\xa3" not in data  # no EBML header in clear
    # With a tiny head and window, the muxer's patches hit sealed chunks: the file is rewritten
    # under a new salt and still ends up byte for byte what the muxer meant.
    assert plain(tmp_path / "a.webm", key, "out/a.webm") == reference.getvalue()
    with av.open(io.BytesIO(reference.getvalue())) as check:
        assert check.duration and check.duration > 1_500_000


def test_sparse_writes_small_files_and_abort(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    out = SealedOutput(tmp_path / "s", key, recording_id=RID, name="s", chunk_size=16)
    out.seek(40)
    out.write(b"end")
    out.seek(0)
    out.write(b"start")
    out.close()
    assert plain(tmp_path / "s", key, "s") == b"start" + bytes(35) + b"end"

    empty = SealedOutput(tmp_path / "e", key, recording_id=RID, name="e")
    empty.close()
    assert plain(tmp_path / "e", key, "e") == b""

    # Bound to its name: opened as another file, it fails.
    with pytest.raises(chunkcrypt.TamperedError):
        plain(tmp_path / "s", key, "other")

    with (
        pytest.raises(RuntimeError),
        SealedOutput(tmp_path / "b", key, recording_id=RID, name="b") as broken,
    ):
        broken.write(b"x" * 100)
        raise RuntimeError("the muxer failed")
    with pytest.raises(chunkcrypt.TamperedError):
        plain(tmp_path / "b", key, "b")
    with pytest.raises(FileExistsError):
        SealedOutput(tmp_path / "s", key, recording_id=RID, name="s")
