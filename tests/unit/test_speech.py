"""Transcription with the packaged Whisper, on speech rendered by espeak-ng and on silence."""

import numpy as np
import soundfile as sf

from backend.lab.demo import available_voices, speak


def _clip(tmp_path, text: str) -> np.ndarray:
    path = tmp_path / "clip.wav"
    speak(text, available_voices()[0], 150, 50, path)
    return sf.read(path, dtype="float32")[0]


def test_transcript_carries_the_words_and_silence_gives_none(encoders, tmp_path):
    words = "Please pay me by bank transfer before I ship the parcel."
    speech, silence = _clip(tmp_path, words), np.zeros(3 * 16_000, np.float32)
    said, nothing = encoders.audio.transcribe([speech, silence])
    assert {"bank", "transfer", "parcel"} <= set(said.lower().replace(".", " ").replace(",", " ").split())
    assert nothing == ""


def test_speech_token_lands_near_the_same_words_in_text_space(encoders, tmp_path):
    (token,) = encoders.speech.encode([_clip(tmp_path, "I only accept gift cards as payment.")])
    same, other = encoders.text.encode(["I only accept gift cards as payment.", "Ships within two days from Berlin."])
    assert token.shape == (1, encoders.text.dim)
    assert float(token[0] @ same[0]) > 0.8 > float(token[0] @ other[0])


def test_transcript_stops_at_the_last_word(encoders, tmp_path):
    # Decoded from the clip alone, Whisper said this sentence twice for every demo voice we tried.
    words = "Check the photos for the exact colour."
    (said,) = encoders.audio.transcribe([_clip(tmp_path, words)])
    assert 0 < len(said.split()) <= len(words.split()) + 2, said
