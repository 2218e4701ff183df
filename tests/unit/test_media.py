"""backend.model.media: resolving task values, fetching (loopback HTTP only) and decoding real files."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from backend.config import Settings
from backend.errors import MediaError
from backend.model.allowlist import HostPolicy
from backend.model.media import MediaFetcher, MediaRef, decode_audio, decode_image, decode_text

TOKEN = "Token s3cr3t-test-token"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BROADEN_") or name.startswith("LABEL_STUDIO_"):
            monkeypatch.delenv(name)


def make_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


# -- a loopback HTTP server ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        parts = urlsplit(self.path)
        head, _, arg = parts.path.strip("/").partition("/")
        try:
            self._route(head, arg, parse_qs(parts.query))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, as the timeout tests intend

    def _route(self, head: str, arg: str, query: dict[str, list[str]]) -> None:
        if head == "bytes":
            self._send(200, b"x" * int(arg))
        elif head == "stream":  # no Content-Length: only the streaming cap can stop it
            self.send_response(200)
            self.end_headers()
            for _ in range(int(arg) // 1024):
                self.wfile.write(b"y" * 1024)
        elif head == "status":
            self._send(int(arg), b"nope")
        elif head == "sleep":
            time.sleep(float(arg))
            self._send(200, b"late")
        elif head == "drip":  # every read is quick, the whole body is slow
            self.send_response(200)
            self.end_headers()
            for _ in range(int(arg)):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.1)
        elif "to" in query:  # /redirect?to=..., or Label Studio's storage proxy sending to a cloud URL
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.end_headers()
        elif head == "hops":  # /hops/3 -> /hops/2 -> ... -> /hops/0
            n = int(arg)
            if n == 0:
                self._send(200, b"arrived")
            else:
                self.send_response(302)
                self.send_header("Location", f"/hops/{n - 1}")
                self.end_headers()
        else:
            self._send(200, b"ok:" + self.path.encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, dict[str, str]]]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def headers_for(self, path: str) -> dict[str, str]:
        return next(h for p, h in reversed(self.seen) if p == path)


def _serve() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def ls_server() -> Iterator[_Server]:
    yield from _serve()


@pytest.fixture(scope="module")
def other_server() -> Iterator[_Server]:
    yield from _serve()


@pytest.fixture
def fetcher(ls_server: _Server) -> Iterator[MediaFetcher]:
    settings = make_settings(media_max_bytes=10_000, media_timeout_s=2.0)
    with MediaFetcher(settings, label_studio_url=ls_server.base, headers={"Authorization": TOKEN}) as f:
        yield f


# -- resolve -----------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.png").write_bytes(b"inside")
    (outside / "secret.txt").write_bytes(b"secret")
    return root, outside


def path_fetcher(root: Path, **overrides: object) -> MediaFetcher:
    return MediaFetcher(make_settings(media_roots=str(root), **overrides))


def test_resolve_label_studio_relative_urls() -> None:
    f = MediaFetcher(make_settings(), label_studio_url="http://ls.example:8080/")
    assert f.resolve("/data/upload/12/abc.png") == MediaRef("upload", "http://ls.example:8080/data/upload/12/abc.png")
    ref = f.resolve("/data/local-files/?d=dir/x.wav")
    assert ref == MediaRef("local-files", "http://ls.example:8080/data/local-files/?d=dir/x.wav")
    assert f.resolve("/tasks/7/resolve/?fileuri=czM6Ly9i").source == "url"
    assert f.resolve("http://ls.example:8080/data/upload/1/b.jpg").source == "upload"


def test_label_studio_url_defaults_to_settings() -> None:
    f = MediaFetcher(Settings(LABEL_STUDIO_URL="https://ls.example"))  # type: ignore[call-arg]
    assert f.resolve("/data/upload/1/a.png").location == "https://ls.example/data/upload/1/a.png"


def test_resolve_upload_without_label_studio_url() -> None:
    with pytest.raises(MediaError, match="LABEL_STUDIO_URL"):
        MediaFetcher(make_settings()).resolve("/data/upload/12/abc.png")


def test_resolve_plain_urls() -> None:
    f = MediaFetcher(make_settings(), label_studio_url="http://ls.example")
    assert f.resolve(" https://cdn.example/x.jpg ") == MediaRef("url", "https://cdn.example/x.jpg")
    assert f.resolve("http://other.example/data/upload/1/a.png").source == "url"


@pytest.mark.parametrize("value", ["s3://bucket/a.png", "gs://bucket/a.wav", "azure-blob://c/a.txt"])
def test_resolve_cloud_urls_need_presigning(value: str) -> None:
    with pytest.raises(MediaError, match="presigned"):
        MediaFetcher(make_settings()).resolve(value)


@pytest.mark.parametrize("value", ["ftp://host/a.png", "data:image/png;base64,AAAA", "", "   ", 12, "a\x00b"])
def test_resolve_rejects_unsupported_values(value: str) -> None:
    with pytest.raises(MediaError):
        MediaFetcher(make_settings(media_roots="/")).resolve(value)


def test_resolve_paths_inside_roots(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    f = path_fetcher(root)
    expected = MediaRef("path", str((root / "sub" / "a.png").resolve()))
    assert f.resolve(str(root / "sub" / "a.png")) == expected
    assert f.resolve("sub/a.png") == expected
    assert f.resolve(f"file://{root}/sub/a.png") == expected
    assert f.fetch(expected) == b"inside"


def test_resolve_paths_need_roots(roots: tuple[Path, Path]) -> None:
    with pytest.raises(MediaError, match="BROADEN_MEDIA_ROOTS"):
        MediaFetcher(make_settings()).resolve(str(roots[0] / "sub" / "a.png"))


@pytest.mark.parametrize(
    "make_value",
    [
        lambda root, outside: str(outside / "secret.txt"),
        lambda root, outside: str(root / ".." / "outside" / "secret.txt"),
        lambda root, outside: "../outside/secret.txt",
        lambda root, outside: "sub/../../outside/secret.txt",
    ],
    ids=["outside", "dotdot-absolute", "dotdot-relative", "dotdot-nested"],
)
def test_resolve_refuses_escapes(roots: tuple[Path, Path], make_value) -> None:  # type: ignore[no-untyped-def]
    root, outside = roots
    with pytest.raises(MediaError, match="outside BROADEN_MEDIA_ROOTS"):
        path_fetcher(root).resolve(make_value(root, outside))


def test_resolve_refuses_symlink_escapes(roots: tuple[Path, Path]) -> None:
    root, outside = roots
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    f = path_fetcher(root)
    for value in ("link.txt", str(root / "linkdir" / "secret.txt")):
        with pytest.raises(MediaError, match="outside"):
            f.resolve(value)
    # A hand-made ref (or a tree changed after resolve) is checked again when read.
    with pytest.raises(MediaError, match="outside"):
        f.fetch(MediaRef("path", str(root / "link.txt")))


def test_symlink_inside_roots_is_allowed(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    (root / "alias.png").symlink_to(root / "sub" / "a.png")
    ref = path_fetcher(root).resolve("alias.png")
    assert ref.location == str((root / "sub" / "a.png").resolve())


def test_resolve_inline_text(roots: tuple[Path, Path]) -> None:
    f = MediaFetcher(make_settings(media_roots=str(roots[0])), label_studio_url="http://ls.example")
    assert f.resolve("A cat sat on the mat.", inline_text=True) == MediaRef("inline", "A cat sat on the mat.")
    assert f.resolve("and/or", inline_text=True).source == "inline"
    assert f.resolve("<p>hi</p>", inline_text=True).source == "inline"
    # Values that look like links are text too: only <Text valueType="url"> is fetched (no request
    # to a host a task's text names).
    for value in ("https://x.example/a.txt", "http://127.0.0.1:6379/", "/data/upload/3/t.txt", "sub/a.png"):
        assert f.resolve(value, inline_text=True) == MediaRef("inline", value)


# -- cache keys and local fetches --------------------------------------------------------------------


def test_cache_keys(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    f = MediaFetcher(make_settings(media_roots=str(root)), label_studio_url="http://ls.example")
    path_ref = f.resolve("sub/a.png")
    first = f.cache_key(path_ref)
    assert f.cache_key(path_ref) == first
    (root / "sub" / "a.png").write_bytes(b"changed, and longer")
    assert f.cache_key(path_ref) != first
    upload = f.resolve("/data/upload/1/a.png")
    assert f.cache_key(upload).endswith("http://ls.example/data/upload/1/a.png")
    assert f.cache_key(f.resolve("https://x.example/a")) != f.cache_key(upload)
    digest = hashlib.sha256(b"some text").hexdigest()
    assert digest in f.cache_key(MediaRef("inline", "some text"))
    with pytest.raises(MediaError, match="not found"):
        f.cache_key(MediaRef("path", str(root / "missing.png")))


def test_fetch_inline_and_path_limits(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    f = path_fetcher(root, media_max_bytes=6)
    assert f.fetch(MediaRef("inline", "héllo")) == "héllo".encode()
    assert f.fetch(f.resolve("sub/a.png")) == b"inside"
    (root / "big.bin").write_bytes(b"1234567")
    with pytest.raises(MediaError, match="limit"):
        f.fetch(f.resolve("big.bin"))
    with pytest.raises(MediaError, match="not a regular file"):
        f.fetch(f.resolve("sub"))
    with pytest.raises(MediaError, match="not found"):
        f.fetch(f.resolve("nope.png"))


# -- HTTP fetches ------------------------------------------------------------------------------------


def test_fetch_http_ok_and_client_reuse(fetcher: MediaFetcher, ls_server: _Server) -> None:
    client = fetcher._client
    assert fetcher.fetch(fetcher.resolve(ls_server.base + "/bytes/100")) == b"x" * 100
    assert fetcher.fetch(fetcher.resolve(ls_server.base + "/hops/3")) == b"arrived"
    assert fetcher._client is client


def test_client_closed_on_exit(ls_server: _Server) -> None:
    with MediaFetcher(make_settings(), label_studio_url=ls_server.base) as f:
        f.fetch(f.resolve("/data/upload/1/a.png"))
        client = f._client
    assert client.is_closed


def test_label_studio_headers_only_go_to_label_studio(ls_server: _Server, other_server: _Server) -> None:
    settings = make_settings(media_hosts="127.0.0.1")  # other_server is on loopback too
    fetcher = MediaFetcher(settings, label_studio_url=ls_server.base, headers={"Authorization": TOKEN})
    ref = fetcher.resolve("/data/upload/12/abc.png")
    assert fetcher.fetch(ref) == b"ok:/data/upload/12/abc.png"
    assert ls_server.headers_for("/data/upload/12/abc.png")["authorization"] == TOKEN

    fetcher.fetch(fetcher.resolve(other_server.base + "/elsewhere"))
    assert "authorization" not in other_server.headers_for("/elsewhere")

    # A redirect off the Label Studio host drops the credentials for that hop.
    hop = ls_server.base + "/redirect?to=" + quote(other_server.base + "/after-redirect", safe="")
    assert fetcher.fetch(fetcher.resolve(hop)) == b"ok:/after-redirect"
    assert "authorization" not in other_server.headers_for("/after-redirect")


def test_the_api_key_goes_to_label_studio_media_paths_only(fetcher: MediaFetcher, ls_server: _Server) -> None:
    with pytest.raises(MediaError, match="'..' segments"):  # would be normalised into an API call
        fetcher.resolve("/data/upload/../../api/current-user/whoami")
    fetcher.fetch(fetcher.resolve(ls_server.base + "/api/current-user/whoami"))
    assert "authorization" not in ls_server.headers_for("/api/current-user/whoami")
    # A redirect to Label Studio's API does not carry the key either.
    hop = ls_server.base + "/redirect?to=" + quote("/api/projects/", safe="")
    assert fetcher.fetch(fetcher.resolve(hop)) == b"ok:/api/projects/"
    assert "authorization" not in ls_server.headers_for("/api/projects/")
    fetcher.fetch(fetcher.resolve("/data/local-files/?d=a/b.png"))
    assert ls_server.headers_for("/data/local-files/?d=a/b.png")["authorization"] == TOKEN
    fetcher.fetch(fetcher.resolve("/tasks/3/resolve/?fileuri=czM6Ly9i"))
    assert ls_server.headers_for("/tasks/3/resolve/?fileuri=czM6Ly9i")["authorization"] == TOKEN


def test_size_cap(fetcher: MediaFetcher, ls_server: _Server) -> None:
    with pytest.raises(MediaError, match="limit"):  # refused from Content-Length
        fetcher.fetch(fetcher.resolve(ls_server.base + "/bytes/10001"))
    with pytest.raises(MediaError, match="limit"):  # refused while streaming
        fetcher.fetch(fetcher.resolve(ls_server.base + "/stream/65536"))


@pytest.mark.parametrize("status", [404, 500, 503])
def test_non_2xx(fetcher: MediaFetcher, ls_server: _Server, status: int) -> None:
    with pytest.raises(MediaError, match=f"HTTP {status}"):
        fetcher.fetch(fetcher.resolve(f"{ls_server.base}/status/{status}"))


def test_auth_failure_never_shows_the_token(
    fetcher: MediaFetcher, ls_server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MediaError, match="HTTP 401.*API key") as info:
        fetcher.fetch(fetcher.resolve(ls_server.base + "/status/401?token=abc"))
    assert "s3cr3t" not in str(info.value) and "token=abc" not in str(info.value)
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("backend"))
    assert "HTTP 401" in ours and "s3cr3t" not in ours and "token=abc" not in ours
    assert "s3cr3t" not in caplog.text  # not from httpx either (it logs URLs, never headers)


def test_redirect_limits(fetcher: MediaFetcher, ls_server: _Server) -> None:
    with pytest.raises(MediaError, match="redirects"):
        fetcher.fetch(fetcher.resolve(ls_server.base + "/hops/6"))
    with pytest.raises(MediaError, match="scheme"):
        fetcher.fetch(fetcher.resolve(ls_server.base + "/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd"))


def test_timeouts(ls_server: _Server) -> None:
    with MediaFetcher(make_settings(media_timeout_s=0.3), label_studio_url=ls_server.base) as f:
        for path in ("/sleep/2", "/drip/30"):
            start = time.monotonic()
            with pytest.raises(MediaError, match="timed out"):
                f.fetch(f.resolve(ls_server.base + path))
            assert time.monotonic() - start < 1.5


def test_invalid_url(fetcher: MediaFetcher) -> None:
    with pytest.raises(MediaError, match="could not fetch"):
        fetcher.fetch(MediaRef("url", "http://user:pw@bad-port:abc/x"))


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with MediaFetcher(make_settings(media_timeout_s=2.0, media_hosts="127.0.0.0/8")) as f:
        with pytest.raises(MediaError, match="could not fetch"):
            f.fetch(f.resolve(f"http://127.0.0.1:{port}/a.png"))


# -- which hosts and addresses (backend.model.allowlist) ---------------------------------------------


def test_only_label_studio_is_fetched_unless_allow_listed(
    fetcher: MediaFetcher, ls_server: _Server, other_server: _Server
) -> None:
    seen = len(other_server.seen)
    # Another service on Label Studio's host (Redis was reached this way) is another origin.
    for url in (other_server.base + "/a.png", "http://localhost:" + ls_server.base.rsplit(":", 1)[1] + "/a.png"):
        with pytest.raises(MediaError, match="not an allowed media host.*BROADEN_MEDIA_HOSTS"):
            fetcher.fetch(fetcher.resolve(url))
    # ...also as a redirect target from Label Studio itself.
    hop = ls_server.base + "/redirect?to=" + quote(other_server.base + "/b.png", safe="")
    with pytest.raises(MediaError, match="not an allowed media host"):
        fetcher.fetch(fetcher.resolve(hop))
    assert len(other_server.seen) == seen  # not one request reached it
    assert fetcher.fetch(fetcher.resolve("/data/upload/1/a.png")) == b"ok:/data/upload/1/a.png"


def test_private_addresses_are_refused_after_dns_and_on_every_hop(ls_server: _Server, other_server: _Server) -> None:
    seen = len(other_server.seen)
    port = other_server.base.rsplit(":", 1)[1]
    with MediaFetcher(make_settings(media_hosts="*"), label_studio_url=ls_server.base) as f:
        # "*" is any public host: a name that resolves to loopback is refused on connect.
        for url in (f"http://localhost:{port}/a.png", other_server.base + "/a.png", f"http://[::1]:{port}/a.png"):
            with pytest.raises(MediaError, match="private or local address"):
                f.fetch(f.resolve(url))
        # Label Studio's storage proxy may send us to a cloud host, but never to a private one.
        hop = ls_server.base + "/tasks/3/resolve/?to=" + quote(other_server.base + "/c.png", safe="")
        with pytest.raises(MediaError, match="private or local address"):
            f.fetch(f.resolve(hop))
    assert len(other_server.seen) == seen
    # A host the admin names is fetched, whatever its address.
    with MediaFetcher(make_settings(media_hosts="localhost"), label_studio_url=ls_server.base) as f:
        assert f.fetch(f.resolve(f"http://localhost:{port}/d.png")) == b"ok:/d.png"
        hop = f"http://localhost:{port}/redirect?to=" + quote(other_server.base + "/e.png", safe="")
        with pytest.raises(MediaError, match="not an allowed media host"):  # 127.0.0.1 is not "localhost"
            f.fetch(f.resolve(hop))


@pytest.mark.parametrize(
    ("spec", "host", "allowed"),
    [
        ("", "cdn.example.com", False),
        ("cdn.example.com", "CDN.example.com.", True),
        ("*.s3.amazonaws.com", "bucket.s3.amazonaws.com", True),
        ("*.s3.amazonaws.com", "s3.amazonaws.com.evil.io", False),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("*", "anything.example", True),
    ],
)
def test_host_policy_names(spec: str, host: str, allowed: bool) -> None:
    assert HostPolicy.parse(spec).allows(host, 443) is allowed


@pytest.mark.parametrize(
    ("address", "public"),
    [("8.8.8.8", True), ("127.0.0.1", False), ("10.0.0.1", False), ("169.254.169.254", False),
     ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("::ffff:127.0.0.1", False),
     ("fe80::1", False), ("fd00::1", False), ("224.0.0.1", False), ("2606:4700::1111", True)],
)  # fmt: skip
def test_host_policy_addresses(address: str, public: bool) -> None:
    policy = HostPolicy.parse("*")
    ip = ipaddress.ip_address(address)
    if public:
        policy.check_address("h.example", 80, ip)
    else:
        with pytest.raises(MediaError, match="private or local"):
            policy.check_address("h.example", 80, ip)
    HostPolicy.parse("0.0.0.0/0,::/0").check_address("h.example", 80, ip)  # networks named outright


# -- images ------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_image_exif_orientation() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display needs a quarter turn clockwise
    out = decode_image(encode(image, "JPEG", exif=exif, quality=95), 10**6)
    assert out.mode == "RGB" and out.size == (20, 40)
    assert close(out.getpixel((10, 5)), (255, 0, 0)) and close(out.getpixel((10, 35)), (0, 0, 255))


def test_image_alpha_is_composited_on_white() -> None:
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 128))
    out = decode_image(encode(image, "PNG"), 10**6)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert close(out.getpixel((1, 0)), (255, 127, 127), tol=2)
    la = decode_image(encode(Image.new("LA", (2, 2), (0, 0)), "PNG"), 10**6)
    assert la.getpixel((0, 0)) == (255, 255, 255)


def test_image_palette_with_and_without_transparency() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    out = decode_image(encode(image, "GIF", transparency=0), 10**6)
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((2, 2)) == (255, 255, 255)
    opaque = decode_image(encode(image, "PNG"), 10**6)
    assert opaque.getpixel((2, 2)) == (0, 0, 0)


def test_image_cmyk_greyscale_and_16_bit() -> None:
    cmyk = decode_image(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF"), 10**6)
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0)) == (255, 0, 0)
    assert decode_image(encode(Image.new("L", (3, 3), 77), "PNG"), 10**6).getpixel((1, 1)) == (77, 77, 77)
    assert decode_image(encode(Image.new("1", (3, 3), 1), "PNG"), 10**6).getpixel((1, 1)) == (255, 255, 255)
    deep = Image.fromarray(np.array([[0, 65535], [32768, 257]], dtype=np.uint16))
    assert deep.mode == "I;16"
    out = decode_image(encode(deep, "PNG"), 10**6)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
    assert close(out.getpixel((0, 1)), (128, 128, 128), tol=1) and out.getpixel((1, 1)) == (1, 1, 1)


def test_image_animation_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode_image(data, 10**6)
    assert out.getpixel((4, 4)) == (255, 0, 0)
    assert not getattr(out, "is_animated", False)


@pytest.mark.parametrize("size", [(9_000, 9_000), (60_000, 60_000)])
def test_image_pixel_limit_from_header(size: tuple[int, int]) -> None:
    with pytest.raises(MediaError, match="pixel limit"):
        decode_image(png_header_only(*size), 64_000_000)


def test_image_pixel_limit_small() -> None:
    with pytest.raises(MediaError, match="20x20"):
        decode_image(encode(Image.new("RGB", (20, 20)), "PNG"), 399)
    assert decode_image(encode(Image.new("RGB", (20, 20)), "PNG"), 400).size == (20, 20)


def test_large_images_are_shrunk_at_decode() -> None:
    photo = Image.new("RGB", (6000, 4000), (200, 30, 30))
    jpeg = decode_image(encode(photo, "JPEG", quality=90), 10**8)
    assert min(jpeg.size) <= 1024 and abs(jpeg.width / jpeg.height - 1.5) < 0.01
    assert close(jpeg.getpixel((10, 10)), (200, 30, 30))
    panorama = decode_image(encode(Image.new("RGBA", (9000, 900), (0, 0, 255, 0)), "PNG"), 10**8)
    assert panorama.mode == "RGB" and panorama.width * panorama.height <= 4_000_000
    assert panorama.getpixel((0, 0)) == (255, 255, 255)  # transparent: on white, after shrinking
    assert decode_image(encode(photo.resize((300, 200)), "PNG"), 10**8).size == (300, 200)  # small: as is


def test_decoding_huge_rgba_images_at_once_has_a_bounded_peak(tmp_path: Path) -> None:
    """Four 8000x8000 RGBA PNGs (a few MB) decoded by four threads at once, in a fresh process: it
    peaked at ~1.1 GB per image before, as each was decoded, copied and composited at full size."""
    Image.new("RGBA", (8000, 8000), (10, 200, 10, 128)).save(tmp_path / "huge.png")
    script = (
        "import resource, sys; from concurrent.futures import ThreadPoolExecutor as T\n"
        "from backend.model.media import decode_image\n"
        "data = open(sys.argv[1], 'rb').read(); base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "with T(4) as pool: sizes = list(pool.map(lambda _: decode_image(data, 64_000_000).size, range(4)))\n"
        "print(sizes[0][0], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "huge.png")], capture_output=True,
                          text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=True)  # fmt: skip
    width, added_mb = map(int, done.stdout.split())
    assert width == 1024 and added_mb < 1200, added_mb


def test_image_truncated_or_garbage() -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for fmt in ("PNG", "JPEG"):
        data = encode(noise, fmt)
        with pytest.raises(MediaError, match="corrupt or truncated"):
            decode_image(data[: len(data) // 2], 10**6)
    with pytest.raises(MediaError, match="not a recognised image"):
        decode_image(b"definitely not an image" * 10, 10**6)
    with pytest.raises(MediaError, match="empty"):
        decode_image(b"", 10**6)


# -- audio -------------------------------------------------------------------------------------------


def sound(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_audio_stereo_44k_to_mono_16k() -> None:
    left = tone(1.0, 44_100)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    out = decode_audio(sound(stereo, 44_100), 16_000, 30.0)
    assert out.dtype == np.float32 and out.ndim == 1 and len(out) == 16_000
    rms = float(np.sqrt(np.mean(out[1000:-1000] ** 2)))
    assert rms == pytest.approx(0.25 / np.sqrt(2), rel=0.03)  # channels averaged
    assert int(np.argmax(np.abs(np.fft.rfft(out)))) == 440  # 1 s of signal: bin index is Hz


def test_audio_flac_at_target_rate_is_unchanged() -> None:
    samples = tone(0.5, 16_000)
    out = decode_audio(sound(samples, 16_000, "FLAC"), 16_000, 30.0)
    assert len(out) == 8_000 and np.allclose(out, samples, atol=1e-3)


def test_audio_ogg_and_mp3() -> None:
    out = decode_audio(sound(tone(0.5, 22_050), 22_050, "OGG", "VORBIS"), 16_000, 30.0)
    assert len(out) == 8_000
    try:
        mp3 = sound(tone(0.5, 22_050), 22_050, "MP3", "MPEG_LAYER_III")
    except (sf.LibsndfileError, ValueError, TypeError):
        pytest.skip("this libsndfile cannot write MP3")
    assert abs(len(decode_audio(mp3, 16_000, 30.0)) - 8_000) < 1_000  # encoder padding varies


def test_audio_truncated_to_max_seconds() -> None:
    assert len(decode_audio(sound(tone(3.0, 16_000), 16_000), 16_000, 1.0)) == 16_000
    stereo = np.stack([tone(3.0, 44_100)] * 2, axis=1)
    assert len(decode_audio(sound(stereo, 44_100), 16_000, 1.5)) == 24_000


@pytest.mark.parametrize("rate", [15_999, 22_051])
def test_audio_co_prime_rates_stay_cheap(rate: int) -> None:
    # These rates share no useful factor with 16 kHz; an exact sinc kernel would need gigabytes.
    start = time.monotonic()
    out = decode_audio(sound(tone(1.0, rate), rate), 16_000, 30.0)
    assert abs(len(out) - 16_000) < 160 and time.monotonic() - start < 5.0


def test_audio_header_lies() -> None:
    wav = bytearray(sound(tone(1.0, 16_000), 16_000, subtype="PCM_16"))
    assert wav[24:28] == struct.pack("<I", 16_000)  # the fmt chunk's sample rate
    # A header claiming more frames than the file holds: only the real samples come back.
    assert len(decode_audio(bytes(wav[: 44 + 1_000]), 16_000, 30.0)) == 500
    wav[24:28] = struct.pack("<I", 2_000_000_000)
    with pytest.raises(MediaError, match="sample rate"):
        decode_audio(bytes(wav), 16_000, 30.0)


def test_audio_failures() -> None:
    with pytest.raises(MediaError, match="not a readable audio file"):
        decode_audio(b"RIFF garbage" * 50, 16_000, 30.0)
    with pytest.raises(MediaError, match="empty"):
        decode_audio(b"", 16_000, 30.0)
    with pytest.raises(MediaError, match="no samples"):
        decode_audio(sound(np.zeros((0, 1), np.float32), 16_000), 16_000, 30.0)
    bad = tone(0.1, 16_000)
    bad[5] = np.nan
    with pytest.raises(MediaError, match="NaN"):
        decode_audio(sound(bad, 16_000, subtype="FLOAT"), 16_000, 30.0)
    bad[5] = np.inf
    with pytest.raises(MediaError, match="infinite"):
        decode_audio(sound(bad, 16_000, subtype="FLOAT"), 16_000, 30.0)


# -- text --------------------------------------------------------------------------------------------


def test_text_plain() -> None:
    assert decode_text(b"  hello\n\n  world\t! ", 100) == "hello world !"
    assert decode_text("\ufeffa < b and c > d".encode(), 100) == "a < b and c > d"
    assert decode_text(b"abc\xffdef", 100) == "abc\ufffddef"
    assert decode_text(b"0123456789", 4) == "0123"


def test_text_html_is_stripped() -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>T</title><style>p {color: red}</style></head>"
        b"<body><p>One&nbsp;&amp; two</p><p>three<b>four</b></p><script>var x = '<p>';</script>"
        b"<ul><li>five</li><li>six</li></ul></body></html>"
    )
    assert decode_text(page, 1000) == "T One\xa0& two threefour five six".replace("\xa0", " ")
    assert decode_text(b"<p>alpha</p><p>beta</p>", 7) == "alpha b"


def test_text_malformed_html_keeps_the_text() -> None:
    out = decode_text(b"<p>good</p>\n<b>then</b> <![ broken ! declaration", 100)
    assert out.startswith("good then") and "broken ! declaration" in out
