"""Audio inputs: the mel filterbank and log-mel features against a reference computed here on a synthetic tone,
reading class folders / CSVs / unlabeled folders, resampling and downmixing, the feature cache, and every bad input
the issue lists (a clear message naming the file, nothing half-written)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from scipy.io import wavfile

from transferlab.data.audio import (LOG_FLOOR, AudioSet, MelSettings, hz_to_mel, log_mel, mel_centres,
                                    mel_filterbank, mel_to_hz, parse_mel, read_audio)
from transferlab.errors import UserError
from transferlab.inputs import data_modality

SR = 16000


def tone(freq: float, seconds: float = 0.5, rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, wave: np.ndarray, rate: int = SR, dtype=np.int16):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave if dtype == np.float32 else np.round(wave * 32767).astype(dtype)
    wavfile.write(path, rate, data)
    return path


# ------------------------------------------------------------------------------------------------ the transform


def reference_filterbank(s: MelSettings) -> np.ndarray:
    """Slaney-scale triangles written the slow, obvious way: one filter and one FFT bin at a time."""
    def mel(f):
        return 3 * f / 200 if f < 1000 else 15 + 27 * math.log(f / 1000) / math.log(6.4)

    def hz(m):
        return 200 * m / 3 if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)

    top = s.sample_rate / 2 if s.f_max is None else s.f_max
    lo, hi = mel(s.f_min), mel(top)
    edges = [hz(lo + (hi - lo) * i / (s.n_mels + 1)) for i in range(s.n_mels + 2)]
    n_bins = s.window // 2 + 1
    bank = np.zeros((s.n_mels, n_bins))
    for k in range(s.n_mels):
        left, centre, right = edges[k], edges[k + 1], edges[k + 2]
        for b in range(n_bins):
            f = b * s.sample_rate / s.window
            if left < f <= centre:
                bank[k, b] = (f - left) / (centre - left)
            elif centre < f < right:
                bank[k, b] = (right - f) / (right - centre)
    return bank


@pytest.mark.parametrize("settings", [MelSettings(), MelSettings(sample_rate=8000, window=256, hop=80, n_mels=40,
                                                                 f_min=20.0, f_max=3800.0)])
def test_filterbank_matches_the_slow_reference(settings):
    np.testing.assert_allclose(mel_filterbank(settings), reference_filterbank(settings), atol=1e-5)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([0, 500, 1000, 4321.5])), [0, 500, 1000, 4321.5], rtol=1e-9)


def test_log_mel_of_a_tone_matches_a_numpy_reference_and_peaks_at_the_right_bin():
    s = MelSettings()
    wave = tone(1500.0, 0.3)
    got = log_mel(wave, s)
    # reference: frames cut by hand, periodic Hann window, numpy's real FFT, the slow filterbank, natural log
    n_frames = 1 + (len(wave) - s.window) // s.hop
    assert got.shape == (n_frames, s.n_mels)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(s.window) / s.window)
    frames = np.stack([wave[i * s.hop:i * s.hop + s.window] * hann for i in range(n_frames)]).astype(np.float64)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    expected = np.log(power @ reference_filterbank(s).T + LOG_FLOOR)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
    # the loudest bin is the filter whose peak lies nearest 1500 Hz, in every frame
    nearest = int(np.argmin(np.abs(mel_centres(s) - 1500.0)))
    assert (got.argmax(axis=1) == nearest).all()
    for freq in (300.0, 700.0, 3000.0, 6000.0):
        assert log_mel(tone(freq), s).mean(0).argmax() == np.argmin(np.abs(mel_centres(s) - freq))


def test_settings_are_checked_and_parsed():
    assert parse_mel("sample_rate=8000,n_mels=40") == MelSettings(sample_rate=8000, n_mels=40)
    assert parse_mel(None) == MelSettings()
    with pytest.raises(UserError, match="not KEY=NUMBER"):
        parse_mel("n_mels")
    with pytest.raises(UserError, match="unknown mel setting"):
        parse_mel("mels=40")
    with pytest.raises(UserError, match="Nyquist"):
        MelSettings(f_max=9000.0)
    with pytest.raises(UserError, match="without an FFT bin"):
        mel_filterbank(MelSettings(window=64, hop=32, n_mels=80))


# ------------------------------------------------------------------------------------------------ readers


@pytest.fixture
def folder(tmp_path):
    """root/<word>/<clip>.wav: 'low' tones near 400 Hz, 'high' near 2500 Hz, clips of different lengths."""
    root = tmp_path / "words"
    rng = np.random.default_rng(0)
    for label, base in (("low", 400.0), ("high", 2500.0)):
        for i in range(3):
            write(root / label / f"{i}.wav", tone(base * rng.uniform(0.95, 1.05), rng.uniform(0.3, 0.6)))
    return root


def test_class_folders_read_with_labels_and_lengths(folder):
    data = read_audio(folder)
    assert len(data) == 6 and data.label_names == ["high", "low"] and list(data.labels) == [0, 0, 0, 1, 1, 1]
    assert data.features.dtype == np.float16 and data.n_mels == 80
    assert all(data.clip(i).shape[0] == data.lengths[i] for i in range(6))
    assert 1.7 / 3600 < data.hours < 3.6 / 3600  # six clips of 0.3 to 0.6 s
    high = np.asarray(data.clip(0), dtype=np.float32).mean(0).argmax()
    low = np.asarray(data.clip(5), dtype=np.float32).mean(0).argmax()
    assert mel_centres(data.settings)[high] > 2000 and mel_centres(data.settings)[low] < 600
    sub = data.subset([5, 0])
    assert list(sub.labels) == [1, 0] and sub.features is data.features and sub.lines == [6, 1]
    # a dev split read with the training split's classes keeps their ids
    again = read_audio(folder, label_names=["low", "high"])
    assert list(again.labels) == [1, 1, 1, 0, 0, 0]
    assert data_modality(folder) == "audio" and data_modality(folder / "low" / "0.wav") == "audio"


def test_csv_and_flat_folders(folder, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("file,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n"
                                          for p in sorted(folder.rglob("*.wav"))))
    data = read_audio(csv)
    assert len(data) == 6 and data.label_names == ["high", "low"] and data.lines == [2, 3, 4, 5, 6, 7]
    assert data_modality(csv) == "audio"
    flat = read_audio(folder / "low", require_labels=False)
    assert flat.labels is None and len(flat) == 3
    with pytest.raises(UserError, match="no class sub-folders"):
        read_audio(folder / "low")


def test_resampling_and_downmixing_are_done_and_said(tmp_path, capsys):
    write(tmp_path / "a" / "hi.wav", tone(1500.0, rate=22050), rate=22050)
    write(tmp_path / "a" / "lo.wav", tone(1500.0, rate=8000), rate=8000)
    stereo = np.stack([tone(1500.0), tone(1500.0, amplitude=0.1)], axis=1)
    write(tmp_path / "a" / "st.wav", stereo)
    write(tmp_path / "a" / "f.wav", tone(1500.0), dtype=np.float32)
    data = read_audio(tmp_path / "a", require_labels=False)
    err = capsys.readouterr().err
    assert "1 multichannel clip(s) downmixed to mono" in err
    assert "resampled 1 at 8000 Hz, 1 at 22050 Hz to 16000 Hz" in err and "below 16000 Hz" in err
    nearest = int(np.argmin(np.abs(mel_centres(data.settings) - 1500.0)))
    for i in range(len(data)):
        assert np.asarray(data.clip(i), dtype=np.float32).mean(0).argmax() == nearest, data.names[i]
    st = data.names.index(str(tmp_path / "a" / "st.wav"))
    pcm = np.round(stereo * 32767).astype(np.int16)  # what the file holds
    mono = log_mel((pcm.astype(np.float32) / 32768).mean(1), data.settings)
    np.testing.assert_allclose(np.asarray(data.clip(st), dtype=np.float32), mono, atol=0.02)


def test_waveforms_in_memory():
    data = AudioSet.from_waveforms([tone(400.0), tone(2500.0, 0.8)], [0, 1], label_names=["low", "high"])
    assert list(data.lengths) == [48, 78] and data.num_labels == 2
    with pytest.raises(UserError, match="one 1-D array"):
        AudioSet.from_waveforms(tone(400.0))


def test_large_sets_are_computed_once_into_a_memory_mapped_cache(folder, tmp_path, monkeypatch):
    import transferlab.data.audio as audio

    first = read_audio(folder, cache_dir=tmp_path / "cache")
    assert isinstance(first.features, np.memmap)
    [entry] = list((tmp_path / "cache").iterdir())
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["clips"] == 6 and meta["settings"]["n_mels"] == 80

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(audio, "_compute", boom)
    second = read_audio(folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(second.features), np.asarray(first.features))
    with pytest.raises(AssertionError, match="recomputed"):  # other settings are another entry
        read_audio(folder, cache_dir=tmp_path / "cache", settings=MelSettings(n_mels=40))


# ------------------------------------------------------------------------------------------------ bad input


def test_every_bad_input_names_its_file_and_writes_no_cache(folder, tmp_path):
    cases = {}
    good = io.BytesIO()
    wavfile.write(good, SR, np.round(tone(440.0) * 32767).astype(np.int16))
    (folder / "low" / "cut.wav").write_bytes(good.getvalue()[:5000])
    cases["cut.wav"] = "Reached EOF prematurely"
    (folder / "low" / "junk.wav").write_bytes(b"this is not audio at all" * 4)
    cases["junk.wav"] = "not understood"
    (folder / "low" / "head.wav").write_bytes(good.getvalue()[:30])
    cases["head.wav"] = "header is cut short"
    write(folder / "low" / "short.wav", tone(440.0, 0.01))
    cases["short.wav"] = "shorter than one analysis window"
    write(folder / "low" / "quiet.wav", np.zeros(8000, dtype=np.float32))
    cases["quiet.wav"] = "is silent"
    write(folder / "low" / "odd.wav", tone(440.0, rate=16001), rate=16001)
    cases["odd.wav"] = "cannot be resampled to 16000 Hz"
    for name, message in cases.items():
        others = [p for p in (folder / "low").iterdir() if p.name in cases and p.name != name]
        stash = {p: p.read_bytes() for p in others}
        for p in others:
            p.unlink()
        with pytest.raises(UserError, match=message) as e:
            read_audio(folder, cache_dir=tmp_path / "cache")
        assert name in str(e.value)
        for p, raw in stash.items():
            p.write_bytes(raw)
        assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir()), "half-written cache"
    empty = tmp_path / "empty"
    (empty / "nothing").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no audio"):
        read_audio(empty)
    (empty / "nothing" / "notes.md").write_text("no audio here")
    with pytest.raises(UserError, match="found no audio"):
        read_audio(empty / "nothing", require_labels=False)
    (tmp_path / "flac").mkdir()
    (tmp_path / "flac" / "x.flac").write_bytes(b"fLaC and then nothing")
    with pytest.raises(UserError, match=r"x\.flac.*(soundfile|cannot read)|cannot read.*x\.flac"):
        read_audio(tmp_path / "flac", require_labels=False)


def test_flac_reads_through_soundfile_when_installed(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    soundfile.write(tmp_path / "a.flac", tone(1000.0), SR)
    write(tmp_path / "b.wav", tone(1000.0))
    data = read_audio(tmp_path, require_labels=False)
    flac, wav = (np.asarray(data.clip(i), np.float32) for i in (0, 1))
    loud = wav > wav.max() - 10  # the two writers round to 16 bits differently, which shows only near the floor
    np.testing.assert_allclose(flac[loud], wav[loud], atol=0.05)
