"""Fetch and decode the media a Label Studio task's data points at.

Every failure is a MediaError with a short reason; it fails that one task, never the batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import re
import stat
import sys
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, UnidentifiedImageError

from backend.config import Settings
from backend.errors import MediaError, OutOfTime
from backend.model.allowlist import GuardedTransport, HostPolicy

logger = logging.getLogger(__name__)

SOURCES = ("upload", "local-files", "url", "path", "inline")
MAX_REDIRECTS = 5
_LS_PREFIXES = {"/data/upload/": "upload", "/data/local-files/": "local-files"}
# Label Studio's own proxy for cloud objects; already a plain HTTP resource on the LS host.
_LS_RESOLVE_RE = re.compile(r"^/(?:tasks|projects)/\d+/resolve/?\?")
# The paths on Label Studio's origin that serve media: the only ones its API key is sent to.
_LS_MEDIA_PATH_RE = re.compile(r"^/(?:data/upload/|data/local-files/?$|(?:tasks|projects)/\d+/resolve/?$)")
_CLOUD_SCHEMES = {"s3", "gs", "azure-blob", "azure-spi"}
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

# Audio bounds that keep a corrupt or hostile header from exhausting memory.
_MIN_RATE, _MAX_RATE, _MAX_CHANNELS, _BLOCK_FRAMES = 1_000, 384_000, 64, 16_384
_MAX_RATE_PRODUCT = 1_000_000


@dataclass(frozen=True)
class MediaRef:
    source: str  # where the bytes come from: one of SOURCES
    location: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown media source {self.source!r}")


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    return u.scheme, u.host.lower(), u.port or (443 if u.scheme == "https" else 80)


def _describe(url: str) -> str:
    """URL for messages and logs: no credentials, no query (presigned signatures live there)."""
    parts = urlsplit(url)
    text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    d = parse_qs(parts.query).get("d")
    return f"{text}?d={d[0]}" if parts.path.startswith("/data/local-files") and d else text


def _dot_segments(path: str) -> bool:
    """Does the path hold a '.' or '..' segment, spelled plainly or percent-encoded?"""
    return any(seg in (".", "..") for seg in unquote(path).replace("\\", "/").split("/"))


def _under(path: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in roots)


class MediaFetcher:
    def __init__(
        self,
        settings: Settings,
        label_studio_url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._settings = settings
        base = label_studio_url if label_studio_url is not None else settings.label_studio_url
        self._ls_url = base.strip().rstrip("/") if base else None
        self._ls_origin = _origin(self._ls_url) if self._ls_url else None
        self._headers = dict(headers or {})
        self._roots = settings.media_root_list  # realpath of each root, once per fetcher
        self._policy = HostPolicy.parse(settings.media_hosts, self._ls_origin[1:] if self._ls_origin else None)
        self._http: httpx.Client | None = None

    @property
    def _client(self) -> httpx.Client:
        # Created on the first URL fetch: building one loads the CA certificates, which would
        # otherwise dominate a /predict whose media are all cached.
        if self._http is None:
            # Redirects are followed by hand so auth headers can be chosen per hop.
            self._http = httpx.Client(
                timeout=self._settings.media_timeout_s,
                follow_redirects=False,
                transport=GuardedTransport(self._policy),
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> MediaFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def resolve(self, value: str, *, inline_text: bool = False) -> MediaRef:
        if not isinstance(value, str):  # task data is JSON: a number or list can arrive here
            raise MediaError(f"media reference must be a string, not {type(value).__name__}")
        text = value.strip()
        if not text:
            raise MediaError("empty media reference")
        # A <Text> value is the text, even one that looks like a link (as Label Studio shows it).
        if inline_text:
            return MediaRef("inline", value)
        if "\x00" in text:
            raise MediaError("media reference contains a NUL byte")
        for prefix, source in _LS_PREFIXES.items():
            if text.startswith(prefix):
                return MediaRef(source, self._on_label_studio(text))
        if _LS_RESOLVE_RE.match(text):
            return MediaRef("url", self._on_label_studio(text))
        match = _SCHEME_RE.match(text)
        return self._resolve_scheme(text, match.group(1).lower() if match else "")

    def _resolve_scheme(self, text: str, scheme: str) -> MediaRef:
        if scheme in ("http", "https"):
            return MediaRef(self._ls_source(text), text)
        if scheme in _CLOUD_SCHEMES:
            raise MediaError(
                f"cloud storage URLs must be presigned by Label Studio ({scheme}:// is not fetched "
                "directly); enable 'presign URLs' on the project's cloud storage"
            )
        if scheme == "file":
            parts = urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                raise MediaError("file:// URLs must name a local path (file:///...)")
            return MediaRef("path", self._checked_path(unquote(parts.path)))
        if scheme or text.lower().startswith("data:"):
            raise MediaError(f"unsupported URL scheme {scheme or 'data'!r}")
        return MediaRef("path", self._checked_path(text))

    def _on_label_studio(self, relative: str) -> str:
        if _dot_segments(urlsplit(relative).path):
            raise MediaError("a Label Studio media path may not contain '.' or '..' segments")
        if not self._ls_url:
            raise MediaError(
                f"{relative.split('?')[0]} is on Label Studio, whose URL is unknown (set LABEL_STUDIO_URL)"
            )
        if not self._ls_url.startswith(("http://", "https://")):
            raise MediaError("LABEL_STUDIO_URL must start with http:// or https://")
        return self._ls_url + relative

    def _on_ls_host(self, url: str) -> bool:
        return self._ls_origin is not None and _origin(url) == self._ls_origin

    def _gets_key(self, url: str) -> bool:
        """Label Studio's credentials go to its media paths only, never to its API or elsewhere."""
        path = urlsplit(url).path
        return self._on_ls_host(url) and not _dot_segments(path) and bool(_LS_MEDIA_PATH_RE.match(unquote(path)))

    def _ls_source(self, url: str) -> str:
        """An absolute URL on the Label Studio host keeps its upload/local-files identity."""
        path = urlsplit(url).path if self._on_ls_host(url) else ""
        return next((source for prefix, source in _LS_PREFIXES.items() if path.startswith(prefix)), "url")

    def _checked_path(self, raw: str) -> str:
        roots = self._roots
        if not roots:
            raise MediaError("local file paths are disabled: set BROADEN_MEDIA_ROOTS to allow a directory")
        candidates = [raw] if os.path.isabs(raw) else [os.path.join(root, raw) for root in roots]
        # realpath resolves '..' and symlinks, so the check applies to the file actually read.
        allowed = [p for p in map(os.path.realpath, candidates) if _under(p, roots)]
        if not allowed:
            raise MediaError(f"path {raw!r} is outside BROADEN_MEDIA_ROOTS (checked after '..' and symlinks)")
        return next((p for p in allowed if os.path.exists(p)), allowed[0])

    def cache_key(self, ref: MediaRef) -> str:
        if ref.source == "inline":
            return "inline:" + hashlib.sha256(ref.location.encode("utf-8")).hexdigest()
        if ref.source == "path":
            st = self._stat_file(ref.location)
            # mtime and size change when the file is replaced, so stale encodings are not reused.
            return f"path:{ref.location}:{st.st_mtime_ns}:{st.st_size}"
        return f"{ref.source}:{ref.location}"

    def fetch(self, ref: MediaRef, until: float | None = None) -> bytes:
        """The bytes; `until` (time.monotonic()) is the caller's own deadline, when sooner than
        the fetch's timeout: a fetch cut short by it raises OutOfTime."""
        try:
            if ref.source == "inline":
                return ref.location.encode("utf-8")
            if ref.source == "path":
                return self._read_file(ref.location)
            return self._fetch_url(ref.location, until)
        except OutOfTime:
            raise
        except MediaError as exc:
            logger.warning("media fetch failed (%s): %s", ref.source, exc)
            raise

    def _stat_file(self, path: str) -> os.stat_result:
        # Checked again at use: the tree may have changed since resolve().
        if not _under(os.path.realpath(path), self._roots):
            raise MediaError(f"path {path!r} is outside BROADEN_MEDIA_ROOTS")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise MediaError(f"file not found: {path}") from None
        except OSError as exc:
            raise MediaError(f"cannot access {path}: {exc.strerror or type(exc).__name__}") from None
        if not stat.S_ISREG(st.st_mode):
            raise MediaError(f"not a regular file: {path}")
        return st

    def _read_file(self, path: str) -> bytes:
        cap = self._settings.media_max_bytes
        if self._stat_file(path).st_size > cap:
            raise MediaError(f"file is larger than the {cap}-byte limit: {path}")
        try:
            with open(path, "rb") as fh:
                data = fh.read(cap + 1)  # the file may grow between stat and read
        except OSError as exc:
            raise MediaError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        if len(data) > cap:
            raise MediaError(f"file is larger than the {cap}-byte limit: {path}")
        return data

    def _fetch_url(self, url: str, until: float | None = None) -> bytes:
        timeout = self._settings.media_timeout_s
        deadline = time.monotonic() + timeout  # one budget for all hops and the whole body
        if until is not None and until < deadline:
            deadline = until
            if until <= time.monotonic():
                raise OutOfTime(f"no time left to fetch {_describe(url)}")
        from_label_studio = False
        try:
            for _ in range(MAX_REDIRECTS + 1):
                self._check_host(url, from_label_studio)
                from_label_studio = self._gets_key(url)  # its storage proxy may redirect to a cloud URL
                body, url = self._get_once(url, deadline)
                if body is not None:
                    return body
        except httpx.TimeoutException:
            if until is not None and deadline == until:
                raise OutOfTime(f"the request's time ran out fetching {_describe(url)}") from None
            raise MediaError(f"timed out after {timeout:g}s fetching {_describe(url)}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise MediaError(f"could not fetch {_describe(url)}: {type(exc).__name__}") from None
        raise MediaError(f"more than {MAX_REDIRECTS} redirects fetching {_describe(url)}")

    def _check_host(self, url: str, from_label_studio: bool) -> None:
        origin = _origin(url)
        if origin is None:
            raise MediaError(f"could not fetch {_describe(url)}: not a valid URL")
        if not self._policy.allows(origin[1], origin[2], from_label_studio=from_label_studio):
            raise MediaError(
                f"{origin[1]} is not an allowed media host: add it to BROADEN_MEDIA_HOSTS ('*' allows any public host)"
            )

    def _get_once(self, url: str, deadline: float) -> tuple[bytes | None, str]:
        """One request: the body, or None and the URL a redirect points at."""
        remaining = max(deadline - time.monotonic(), 0.001)
        # Label Studio credentials go to its media paths only, decided again on every hop.
        headers = self._headers if self._gets_key(url) else {}
        timeout = min(self._settings.media_timeout_s, remaining)
        response = self._client.send(
            self._client.build_request("GET", url, headers=headers, timeout=timeout), stream=True
        )
        try:
            if not response.is_redirect:
                self._check_status(response, url)
                return self._read_capped(response, url, deadline), url
            target = str(response.url.join(response.headers["location"]))
        finally:
            response.close()
        if urlsplit(target).scheme not in ("http", "https"):
            raise MediaError(f"redirect to an unsupported scheme from {_describe(url)}")
        return None, target

    def _check_status(self, response: httpx.Response, url: str) -> None:
        if response.is_success:
            return
        auth = response.status_code in (401, 403) and self._on_ls_host(url)
        hint = " (check the Label Studio API key)" if auth else ""
        raise MediaError(f"HTTP {response.status_code} fetching {_describe(url)}{hint}")

    def _read_capped(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        cap = self._settings.media_max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise MediaError(f"{_describe(url)} is larger than the {cap}-byte limit")
        body = bytearray()
        for chunk in response.iter_bytes():  # decoded bytes, so compressed bombs count at full size
            body += chunk
            if len(body) > cap:
                raise MediaError(f"{_describe(url)} is larger than the {cap}-byte limit")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("body too slow", request=response.request)
        return bytes(body)


# Decoded images are kept at most this large: every encoder resizes to a few hundred pixels, and
# a full-size 8000x8000 RGBA photo would otherwise hold ~1 GB through its conversions.
DECODED_SHORT_SIDE, DECODED_MAX_PIXELS = 1024, 4_000_000
# One image above this many pixels is decoded at a time per process, so concurrent fetch threads
# cannot multiply the worst case (a 64-megapixel RGBA decode needs 256 MB before it is shrunk).
_LARGE_PIXELS = 16_000_000
_large_decode = threading.Lock()


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise MediaError("image is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            # The header alone gives the size: refuse before any pixel is decompressed.
            if probe.width * probe.height > max_pixels:
                raise MediaError(f"image is {probe.width}x{probe.height}, over the {max_pixels}-pixel limit")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.seek(0)  # animated images: the first frame
        large = image.width * image.height > _LARGE_PIXELS
        with _large_decode if large else contextlib.nullcontext():
            image.draft("RGB", _shrunk_size(image.size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.load()
            image = _shrink(_to_8bit(image))
    except MediaError:
        raise
    except Image.DecompressionBombError:
        raise MediaError(f"image is over the {max_pixels}-pixel limit") from None
    except UnidentifiedImageError:
        raise MediaError("not a recognised image format") from None
    except Exception as exc:  # decoders raise many types on malformed input
        raise MediaError(f"image data is corrupt or truncated ({type(exc).__name__})") from None
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        logger.info("ignoring unreadable EXIF orientation")
    try:
        return _to_rgb(image)
    except Exception as exc:
        raise MediaError(f"cannot convert {image.mode} image to RGB ({type(exc).__name__})") from None


def _shrunk_size(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    factor = max(1.0, min(w, h) / DECODED_SHORT_SIDE, math.sqrt(w * h / DECODED_MAX_PIXELS))
    return max(1, round(w / factor)), max(1, round(h / factor))


def _to_8bit(image: Image.Image) -> Image.Image:
    """Modes that resize badly or not at all become 8-bit ones first (palettes keep transparency)."""
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_to_l(image)
    if image.mode in ("P", "PA", "1"):
        alpha = image.mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if alpha else "RGB")
    return image


def _shrink(image: Image.Image) -> Image.Image:
    size = _shrunk_size(image.size)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _to_rgb(image: Image.Image) -> Image.Image:
    bands = image.getbands()
    if "A" in bands or "a" in bands or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8-bit by scaling, since a plain convert clips everything above 255."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32))
    low, high = 0.0, 65535.0  # integer modes: the 16-bit range (PNG/TIFF 16-bit greyscale)
    if image.mode == "F" or values.min() < 0 or values.max() > 65535:
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) / max(high - low, 1e-12) * 255.0 + 0.5
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))


def decode_audio(data: bytes, sample_rate: int, max_seconds: float) -> np.ndarray:
    if not data:
        raise MediaError("audio is empty")
    try:
        mono, source_rate = _read_mono(data, max_seconds)
    except MediaError:
        raise
    except Exception as exc:  # libsndfile reports malformed input with several types
        reason = getattr(exc, "error_string", "") or type(exc).__name__
        raise MediaError(f"not a readable audio file ({reason})") from None
    if mono.size == 0:
        raise MediaError("audio has no samples")
    if not np.isfinite(mono).all():  # averaging keeps NaN and inf visible
        raise MediaError("audio contains NaN or infinite samples")
    if source_rate != sample_rate:
        mono = _resample(mono, source_rate, sample_rate)
    keep = int(max_seconds * sample_rate) if math.isfinite(max_seconds) else len(mono)
    return np.ascontiguousarray(mono[:keep], dtype=np.float32)


def _read_mono(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode at most max_seconds, mixed to mono block by block.

    Memory then follows what is really decoded, not the frame count a (possibly corrupt) header claims.
    """
    with sf.SoundFile(io.BytesIO(data)) as sound:
        rate, channels = int(sound.samplerate), int(sound.channels)
        if not _MIN_RATE <= rate <= _MAX_RATE:
            raise MediaError(f"unsupported sample rate {rate} Hz")
        if channels > _MAX_CHANNELS:
            raise MediaError(f"too many audio channels ({channels})")
        left = math.ceil(max_seconds * rate) if math.isfinite(max_seconds) else sys.maxsize
        parts: list[np.ndarray] = []
        while left > 0:
            block = sound.read(min(_BLOCK_FRAMES, left), dtype="float32", always_2d=True)
            if not len(block):
                break
            parts.append(block.mean(axis=1, dtype=np.float32))
            left -= len(block)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), rate


def _resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    # Imported here so processes that only fetch or decode images do not load torch.
    import torch
    import torchaudio.functional as audio_functional

    # The sinc kernel grows with the reduced rate ratio: co-prime rates such as 15999 -> 16000 Hz
    # would need gigabytes. Rounding such a rate to 100 Hz bounds it (pitch off by at most 50 Hz).
    divisor = math.gcd(source_rate, target_rate)
    if (source_rate // divisor) * (target_rate // divisor) > _MAX_RATE_PRODUCT:
        source_rate = round(source_rate / 100) * 100
    with torch.no_grad():
        out = audio_functional.resample(torch.from_numpy(samples), source_rate, target_rate)
    return out.numpy()


_SKIPPED_TAGS = {"script", "style", "template", "noscript"}
_BLOCK_TAGS = set(
    "address article aside blockquote br dd div dl dt figcaption footer h1 h2 h3 h4 h5 h6 header hr "
    "li main nav ol p pre section table td th title tr ul".split()
)
# A real tag (name right after '<'), so plain text like "a < b" is not mistaken for HTML.
_HTML_RE = re.compile(r"<!doctype\s|</?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?/?>", re.IGNORECASE)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")  # keeps words in adjacent blocks apart

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(self._skip_depth - 1, 0)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def decode_text(data: bytes, max_chars: int) -> str:
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    if _HTML_RE.search(text):
        text = _html_to_text(text)
    return " ".join(text.split())[:max_chars]


def _html_to_text(html: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser gives up on some malformed declarations: keep the rest as text
        line, column = parser.getpos()
        offset = sum(len(row) + 1 for row in html.split("\n")[: line - 1]) + column
        parser.parts.append(html[offset:])
    return "".join(parser.parts)
