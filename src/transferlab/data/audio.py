"""Audio read from disk into log-mel features computed once: WAV (and FLAC with ``soundfile``), class folders, CSVs.

Every reader returns an ``AudioSet``: the log-mel frames of every clip one after another in one (F, n_mels) float16
array, where each clip starts and how many frames it has, int64 class ids and the class names. It duck-types the
text ``LabeledSet`` as ``ImageSet`` does, so label budgets, compare grids and the Keras-style facade take audio too.

Why features and not waveforms: a training loop that recomputes a spectrogram per clip per epoch spends its time
there, and every model here reads log-mel frames. So decoding, resampling and the mel transform run once, at read
time. A set whose files exceed ``CACHE_MIN_BYTES`` is computed into a cache directory (``features.bin`` +
``offsets.npy`` + ``meta.json``, the token corpus's layout) and read back memory-mapped: a corpus larger than memory
works and a second read skips the work. The cache entry is named by a hash of the files (resolved path, size,
modification time) and the mel settings, and written under a temporary name that is renamed when complete, so a
killed run never leaves an entry that passes for a finished one.

Decoding: WAV through ``scipy.io.wavfile`` (scipy comes with scikit-learn; it reads 8/16/24/32-bit PCM and float
WAVs, mono or multichannel), FLAC and OGG through ``soundfile`` when it is installed (a wheel with its own
libsndfile, independent of torch). torchaudio is not used: its releases no longer follow torch's, and the pinned torch
would have to move with it. Resampling is scipy's polyphase ``resample_poly`` (an anti-aliasing FIR filter; cost in
docs/performance.md).

The mel transform (``log_mel``): a Hann-windowed STFT (``torch.stft``, no Python loop over frames; frames start at
sample 0 and step by ``hop``, Kaldi's "snip edges", so a clip of n samples has 1 + (n - window) // hop frames), the
power spectrum, triangular filters on the Slaney mel scale (linear below 1 kHz, logarithmic above: librosa's and
Whisper's default, which leaves no filter empty at 80 bins for a 25 ms window at 16 kHz, where HTK's scale would),
and ``log(mel + LOG_FLOOR)``.

Bad input is refused with the file named, before anything is written: an unreadable or truncated file, a sample rate
that cannot be resampled, a clip shorter than one window, a clip of silence, a folder without audio. Stereo (or any
multichannel) clips are downmixed to mono by averaging the channels, and the reader says how many it downmixed.

``path`` may name a folder tree ``root/<class>/<clip>`` (or ``root/<split>/<class>/<clip>``), a flat folder of clips
(unlabeled: what self-supervised pretraining reads), a CSV with a header naming a path column and a label column, or a
directory holding ``{split}.csv``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
AUDIO_PATH_COLUMNS = ("path", "file", "filename", "audio", "audio_path", "wav")
CACHE_MIN_BYTES = 32 * 2**20  # sets whose files total more than this are computed into a memory-mapped cache
PROGRESS_MIN_FILES = 500
LOG_FLOOR = 1e-6  # added to mel power before the log: silence stays finite (~-13.8) and near 16-bit noise floor
SILENCE = 1e-4  # a clip whose peak amplitude is below this (-80 dBFS) holds nothing but silence
MAX_RESAMPLE_FACTOR = 1000  # the polyphase filter grows with up/down; beyond this a rate "cannot be resampled"
_CACHE_VERSION = 1  # bump when decoding or the transform changes, so old caches stop matching


# --------------------------------------------------------------------------------------------------- the transform


@dataclass(frozen=True)
class MelSettings:
    """How waveforms become log-mel frames; part of a model's saved inputs, so new audio is prepared as its
    pretraining audio was.

    Defaults are speech's usual: 16 kHz, 25 ms windows every 10 ms, 80 mel bins (Whisper's and HuBERT's filterbank
    size) over 0 .. 8 kHz. ``window`` is also the FFT size.
    """

    sample_rate: int = 16000
    window: int = 400  # samples per frame (25 ms at 16 kHz)
    hop: int = 160  # samples between frame starts (10 ms)
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None: half the sample rate

    def __post_init__(self):
        for name in ("sample_rate", "window", "hop", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError(f"mel setting {name}={value!r} must be a positive whole number.")
        if self.sample_rate < 1000:
            raise UserError(f"mel setting sample_rate={self.sample_rate} is below 1000 Hz; speech models read 8000 "
                            f"or 16000 Hz audio.")
        if self.window < 16 or self.hop > self.window:
            raise UserError(f"mel settings window={self.window}, hop={self.hop}: a window needs at least 16 samples "
                            f"and the hop must not exceed it (25 ms / 10 ms is window=400, hop=160 at 16 kHz).")
        if not 0 <= self.f_min < self.top:
            raise UserError(f"mel settings f_min={self.f_min}, f_max={self.f_max}: need 0 <= f_min < f_max <= "
                            f"sample_rate / 2 = {self.sample_rate / 2:g} Hz.")
        if self.top > self.sample_rate / 2 + 1e-9:
            raise UserError(f"mel setting f_max={self.f_max} is above the Nyquist frequency sample_rate / 2 = "
                            f"{self.sample_rate / 2:g} Hz; lower it or leave it out.")

    @property
    def top(self) -> float:
        """The highest frequency the filters cover."""
        return float(self.sample_rate / 2 if self.f_max is None else self.f_max)

    @property
    def frame_seconds(self) -> float:
        """Seconds between frames (the hop)."""
        return self.hop / self.sample_rate

    def n_frames(self, n_samples: int) -> int:
        """Frames of a clip of ``n_samples`` (0 when it is shorter than one window)."""
        return 0 if n_samples < self.window else 1 + (n_samples - self.window) // self.hop

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MelSettings":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown mel setting(s) {', '.join(sorted(unknown))}; the settings are "
                            f"{', '.join(cls.__dataclass_fields__)}.")
        return cls(**d)


def parse_mel(spec: str | dict | None) -> MelSettings:
    """Mel settings from ``"sample_rate=8000,n_mels=40"`` (what ``--mel`` takes), a dict, or None (the defaults)."""
    if spec is None or isinstance(spec, MelSettings):
        return spec or MelSettings()
    if isinstance(spec, dict):
        return MelSettings.from_dict(spec)
    out: dict = {}
    for item in (s.strip() for s in str(spec).split(",") if s.strip()):
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or number is None:
            raise UserError(f"--mel: '{item}' is not KEY=NUMBER (e.g. sample_rate=16000,n_mels=80).")
        out[key] = number if key in ("f_min", "f_max") else int(number) if number == int(number) else number
    return MelSettings.from_dict(out)


def hz_to_mel(f):
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above (27 mels per factor 6.4)."""
    f = np.asarray(f, dtype=np.float64)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f < 1000.0, 3.0 * f / 200.0, log_part)


def mel_to_hz(m):
    """The inverse of ``hz_to_mel``."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp((m - 15.0) * (math.log(6.4) / 27.0)))


def mel_filterbank(settings: MelSettings) -> np.ndarray:
    """Triangular filters, (n_mels, window // 2 + 1) float32: filter k rises from mel point k to peak 1 at point
    k + 1 and falls to 0 at point k + 2, for n_mels + 2 points equally spaced in mel from f_min to f_max, evaluated
    at the FFT bins' frequencies. A filter that no FFT bin falls inside is a UserError (too many mel bins for
    the window)."""
    n_bins = settings.window // 2 + 1
    freqs = np.linspace(0.0, settings.sample_rate / 2, n_bins)  # bin k at k * sr / window
    points = mel_to_hz(np.linspace(hz_to_mel(settings.f_min), hz_to_mel(settings.top), settings.n_mels + 2))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]  # (n_mels, 1) each
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, n_bins)
    empty = np.flatnonzero(bank.max(axis=1) <= 0)
    if len(empty):
        raise UserError(f"mel settings n_mels={settings.n_mels} with window={settings.window} at "
                        f"{settings.sample_rate} Hz leave {len(empty)} mel filter(s) without an FFT bin (the first "
                        f"at {centre[empty[0], 0]:.0f} Hz); use fewer mel bins or a longer window.")
    return bank.astype(np.float32)


def mel_centres(settings: MelSettings) -> np.ndarray:
    """The peak frequency (Hz) of every mel filter, (n_mels,)."""
    points = mel_to_hz(np.linspace(hz_to_mel(settings.f_min), hz_to_mel(settings.top), settings.n_mels + 2))
    return points[1:-1]


class LogMel:
    """``log_mel`` with its filterbank and window built once (a reader calls it for every clip)."""

    def __init__(self, settings: MelSettings):
        import torch

        self.settings = settings
        self.bank = torch.from_numpy(mel_filterbank(settings))  # (n_mels, n_bins)
        self.hann = torch.hann_window(settings.window, periodic=True, dtype=torch.float32)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """wave (n,) float32 in [-1, 1], at the settings' sample rate, n >= window -> (frames, n_mels) float32."""
        import torch

        s = self.settings
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        spec = torch.stft(x, n_fft=s.window, hop_length=s.hop, win_length=s.window, window=self.hann, center=False,
                          return_complex=True)  # (n_bins, frames)
        power = spec.real.square() + spec.imag.square()
        return torch.log(self.bank @ power + LOG_FLOOR).T.contiguous().numpy()  # (frames, n_mels)


def log_mel(wave: np.ndarray, settings: MelSettings | None = None) -> np.ndarray:
    """Log-mel frames of one mono waveform: (frames, n_mels) float32 (see the module docstring for the transform)."""
    settings = settings or MelSettings()
    if len(wave) < settings.window:
        raise UserError(f"a clip of {len(wave)} samples is shorter than one window ({settings.window} samples).")
    return LogMel(settings)(wave)


# --------------------------------------------------------------------------------------------------- decoding


@dataclass
class _Notes:
    """What decoding changed, said once per read instead of once per file."""

    downmixed: int = 0
    resampled: dict = field(default_factory=dict)  # source rate -> files
    upsampled: int = 0

    def say(self, source: str, settings: MelSettings) -> None:
        if self.downmixed:
            print(f"{source}: {self.downmixed} multichannel clip(s) downmixed to mono (the mean of the channels).",
                  file=sys.stderr)
        if self.resampled:
            rates = ", ".join(f"{n} at {r} Hz" for r, n in sorted(self.resampled.items()))
            print(f"{source}: resampled {rates} to {settings.sample_rate} Hz.", file=sys.stderr)
        if self.upsampled:
            print(f"{source}: {self.upsampled} clip(s) were recorded below {settings.sample_rate} Hz; their mel bins "
                  f"above half their rate hold no signal.", file=sys.stderr)


def _to_float(data: np.ndarray, path: Path) -> np.ndarray:
    """PCM samples of any width (scipy returns 24-bit as int32 in the top bytes) as float32 in [-1, 1]."""
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype.kind == "i":
        return data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    if data.dtype.kind == "f":
        data = data.astype(np.float32)
        if not np.isfinite(data).all():
            raise UserError(f"cannot use '{path}': it holds NaN or infinite samples. Re-export the recording.")
        return data
    raise UserError(f"cannot use '{path}': samples of type {data.dtype} are not audio. Re-export it as 16-bit PCM.")


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """(samples (n,) or (n, channels) in the file's dtype, sample rate) of one file, or a UserError naming it."""
    suffix = path.suffix.lower()
    fix = "The file is corrupt, truncated or not audio; replace it, or delete it (and its row)."
    if suffix == ".wav":
        from scipy.io import wavfile

        try:
            with warnings.catch_warnings():
                # scipy returns what a truncated file holds with a warning; a cut recording must not pass as whole
                warnings.simplefilter("error", wavfile.WavFileWarning)
                rate, data = wavfile.read(path, mmap=False)
        except wavfile.WavFileWarning as e:
            raise UserError(f"cannot read '{path}': {e} {fix}") from None
        except Exception as e:  # ValueError, EOFError, struct.error, OSError...: all mean "this file"
            what = str(e) or type(e).__name__
            if "unpack requires" in what:  # struct.error: a chunk header ends before its fields
                what = "the WAV header is cut short"
            raise UserError(f"cannot read '{path}': {what}. {fix}") from None
        return data, int(rate)
    try:
        import soundfile
    except ImportError:
        raise UserError(f"'{path}': reading {suffix} files needs the soundfile package (a wheel with its own "
                        f"libsndfile): pip install soundfile. Or convert the files to WAV.") from None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile.LibsndfileError, RuntimeError: all mean "this file"
        raise UserError(f"cannot read '{path}': {e}. {fix}") from None
    return data, int(rate)


def resample(wave: np.ndarray, rate: int, target: int, where: str = "the clip") -> np.ndarray:
    """``wave`` (n,) float32 at ``rate`` Hz resampled to ``target`` Hz with scipy's polyphase filter; a UserError
    naming ``where`` when the ratio needs an impractically long filter (e.g. 16001 -> 16000 Hz) or the rate is
    impossible."""
    if rate == target:
        return wave
    if rate < 100:
        raise UserError(f"'{where}' says its sample rate is {rate} Hz, which is not an audio rate; the header is "
                        f"damaged. Re-export the recording (e.g. at {target} Hz).")
    g = math.gcd(rate, target)
    up, down = target // g, rate // g
    if max(up, down) > MAX_RESAMPLE_FACTOR:
        raise UserError(f"'{where}' is at {rate} Hz, which cannot be resampled to {target} Hz here: the ratio "
                        f"{up}/{down} needs a filter over {MAX_RESAMPLE_FACTOR}x the signal length. Convert it first "
                        f"(e.g. `sox IN -r {target} OUT.wav` or `ffmpeg -i IN -ar {target} OUT.wav`).")
    from scipy.signal import resample_poly

    return resample_poly(wave, up, down).astype(np.float32)


def read_wave(path: str | Path, sample_rate: int, notes: _Notes | None = None, where: str | None = None
              ) -> np.ndarray:
    """One file as a mono float32 waveform at ``sample_rate``: decoded, downmixed (mean of the channels),
    resampled; a UserError naming the file when it cannot be used (see the module docstring)."""
    path = Path(path)
    where = where or str(path)
    data, rate = _decode(path)
    notes = notes if notes is not None else _Notes()
    wave = _to_float(data, path)
    if wave.ndim == 2:
        notes.downmixed += wave.shape[1] > 1
        wave = wave.mean(axis=1)  # (n, channels) -> (n,)
    if wave.size == 0:
        raise UserError(f"'{where}' holds no samples (an empty recording). Delete it (and its row).")
    if rate != sample_rate:
        notes.resampled[rate] = notes.resampled.get(rate, 0) + 1
        notes.upsampled += rate < sample_rate
    return resample(np.ascontiguousarray(wave, dtype=np.float32), rate, sample_rate, where)


def clip_features(wave: np.ndarray, transform: LogMel, where: str) -> np.ndarray:
    """Log-mel frames of one waveform at the transform's rate, after the checks every clip must pass."""
    s = transform.settings
    if len(wave) < s.window:
        raise UserError(f"'{where}' is {len(wave)} samples long ({1000 * len(wave) / s.sample_rate:.1f} ms at "
                        f"{s.sample_rate} Hz), shorter than one analysis window ({s.window} samples = "
                        f"{1000 * s.window / s.sample_rate:.0f} ms). Delete it, or pad the recording.")
    peak = float(np.abs(wave).max())
    if peak < SILENCE:
        raise UserError(f"'{where}' is silent (peak amplitude {peak:.1e}, below -80 dBFS): a clip of silence "
                        f"teaches a model nothing and cannot be normalised. Delete it, or check the recording's "
                        f"gain.")
    return transform(wave)


# --------------------------------------------------------------------------------------------------- the set


@dataclass(eq=False)
class AudioSet:
    """Clips read from one source as log-mel frames, with their labels.

    ``features`` is (F, n_mels) float16 (possibly a read-only ``np.memmap``): clip ``i`` is rows
    ``starts[i] .. starts[i] + lengths[i]``. A subset shares the array and selects clips. ``labels``, ``label_names``,
    ``source``, ``names``, ``task``, ``skipped`` and ``lines`` mean what they mean for ``ImageSet``.
    """

    features: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    label_names: list[str] | None
    source: str
    names: list[str] = field(repr=False)
    settings: MelSettings = field(default_factory=MelSettings)
    task: str = "classification"
    skipped: list = field(default_factory=list)
    positions: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        n = len(self.starts)
        if self.features.ndim != 2 or self.features.shape[1] != self.settings.n_mels:
            raise UserError(f"{self.source}: features of shape {self.features.shape} do not hold "
                            f"{self.settings.n_mels} mel bins per frame.")
        if len(self.lengths) != n or len(self.names) != n or (self.labels is not None and len(self.labels) != n):
            raise UserError(f"{self.source}: {n} clips but {len(self.lengths)} lengths, {len(self.names)} names and "
                            f"{'no' if self.labels is None else len(self.labels)} labels; they must match.")

    def __len__(self) -> int:
        return len(self.starts)

    def __repr__(self) -> str:
        kind = "memmap" if isinstance(self.features, np.memmap) else "in memory"
        classes = "unlabeled" if self.labels is None else f"{self.num_labels} classes"
        return (f"AudioSet({len(self)} clips, {self.hours:.2f} h of {self.settings.n_mels}-bin log-mel frames "
                f"{kind}, {classes}, source={self.source!r})")

    @property
    def num_labels(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    @property
    def n_mels(self) -> int:
        return int(self.features.shape[1])

    @property
    def hours(self) -> float:
        """Audio duration covered by the frames (frames x hop)."""
        return float(self.lengths.sum()) * self.settings.frame_seconds / 3600

    @property
    def lines(self) -> list[int]:
        if self.positions is None:
            return list(range(1, len(self) + 1))
        return [int(p) for p in self.positions]

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i``'s frames, (T, n_mels) float16 (a view into ``features``)."""
        start = int(self.starts[i])
        return self.features[start:start + int(self.lengths[i])]

    def subset(self, indices: Iterable[int]) -> "AudioSet":
        """The clips at ``indices``, in that order, sharing this set's feature array."""
        idx = np.asarray(indices if isinstance(indices, np.ndarray) else [int(i) for i in indices],
                         dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise UserError(f"{self.source}: subset index out of range for {n} clips "
                            f"(got {int(idx.min())}..{int(idx.max())}).")
        positions = np.arange(1, n + 1, dtype=np.int64) if self.positions is None else np.asarray(self.positions)
        return AudioSet(self.features, self.starts[idx], self.lengths[idx],
                        None if self.labels is None else np.asarray(self.labels)[idx].astype(np.int64),
                        None if self.label_names is None else list(self.label_names), self.source,
                        [self.names[i] for i in idx], self.settings, self.task, list(self.skipped), positions[idx])

    @classmethod
    def from_waveforms(cls, waves: Sequence, y=None, sample_rate: int | None = None,
                       settings: MelSettings | None = None, label_names: Sequence[str] | None = None,
                       source: str = "<in-memory>") -> "AudioSet":
        """An audio set from waveforms in memory (what a user passes to ``fit`` / ``predict``).

        Args:
            waves: 1-D float arrays in [-1, 1] (or (n, channels), downmixed), one per clip.
            y: class ids, or None.
            sample_rate: the waves' rate; None means the settings' rate. Other rates are resampled.
            settings: the mel settings (the model's).
            label_names: class names in id order; None names the classes "0".."max(y)".
        """
        from .images import _as_class_ids

        settings = settings or MelSettings()
        rate = int(sample_rate or settings.sample_rate)
        if isinstance(waves, np.ndarray) and waves.ndim == 1:
            raise UserError(f"{source}: got one 1-D array; pass a list of clips (one array per clip), e.g. "
                            f"[wave] for a single clip.")
        transform = LogMel(settings)
        frames = []
        for i, w in enumerate(waves):
            w = np.asarray(w)
            where = f"{source}[{i}]"
            if w.ndim == 2:
                w = w.mean(axis=1)
            if w.ndim != 1:
                raise UserError(f"{where}: a clip is a 1-D array of samples (or (samples, channels)); got shape "
                                f"{w.shape}.")
            w = w.astype(np.float32) if w.dtype.kind == "f" else _to_float(w, Path(where))
            if not np.isfinite(w).all():
                raise UserError(f"{where}: the clip holds NaN or infinite samples.")
            frames.append(clip_features(resample(w, rate, settings.sample_rate, where), transform, where))
        if not frames:
            raise UserError(f"{source}: no clips given.")
        lengths = np.array([len(f) for f in frames], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        labels, names = None, None if label_names is None else [str(n) for n in label_names]
        if y is not None:
            labels = _as_class_ids(y, len(frames), source)
            if names is None:
                names = [str(i) for i in range(int(labels.max()) + 1)]
            elif int(labels.max()) >= len(names):
                raise UserError(f"{source}: label {int(labels.max())} is outside the {len(names)} label names.")
        return cls(np.concatenate(frames).astype(np.float16), starts, lengths, labels, names, source,
                   [f"{source}[{i}]" for i in range(len(frames))], settings)


# --------------------------------------------------------------------------------------------------- readers


def read_audio(path: str | Path, split: str = "train", *, settings: MelSettings | None = None,
               label_names: Sequence[str] | None = None, require_labels: bool = True,
               path_col: str | None = None, label_col: str | None = None,
               cache_dir: str | Path | None = None, progress: bool = True) -> AudioSet:
    """Read clips from a class-folder tree, a flat folder (unlabeled) or a CSV, as log-mel features.

    Args:
        path: what to read (see the module docstring for the layouts).
        split: "train", "val" (or "dev", "validation", "valid") or "test": picks ``root/<split>/`` of a folder tree
            holding split folders, or ``{split}.csv`` in a directory.
        settings: the mel settings (a model's ``AudioInputs.settings``); None: the defaults.
        label_names: the classes in id order (e.g. the training split's); any other label is an error.
        require_labels: when False, a flat folder of clips (or a CSV without a label column) reads unlabeled.
        path_col, label_col: the CSV's columns; None picks them by name (``AUDIO_PATH_COLUMNS``, label/class/...).
        cache_dir: where large sets are computed to; default ``$TRANSFERLAB_CACHE/audio``, else
            ``~/.cache/transferlab/audio``. Given explicitly, every set goes there.
        progress: a progress bar when there are many files.
    Returns:
        an ``AudioSet``.
    """
    from .images import _canonical_split, _check_label_names

    path = Path(path)
    settings = settings or MelSettings()
    split = _canonical_split(split)
    if label_names is not None:
        label_names = _check_label_names(label_names, str(path))
    if not path.exists():
        raise UserError(f"'{path}' does not exist. Pass a folder with one sub-folder of clips per class, a folder "
                        f"of clips (unlabeled), or a CSV of path,label.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"cannot tell how to read '{path}': audio data is a folder (one sub-folder of clips per "
                            f"class, or a flat folder of clips) or a CSV of path,label.")
        files, labels, names, where, rows = _csv_listing(path, path_col, label_col, label_names, require_labels)
    else:
        csv_path = next((path / f"{n}.csv" for n in _split_names(split) if (path / f"{n}.csv").is_file()), None)
        if csv_path is not None:
            files, labels, names, where, rows = _csv_listing(csv_path, path_col, label_col, label_names,
                                                             require_labels)
            path = csv_path
        else:
            files, labels, names, path = _folder_listing(path, split, label_names, require_labels)
            where, rows = None, None
    notes = _Notes()
    features, lengths = _features(files, where or [str(p) for p in files], settings, cache_dir, str(path), notes,
                                  progress)
    notes.say(str(path), settings)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return AudioSet(features, starts, lengths, labels, names, str(path), [str(p) for p in files], settings,
                    positions=None if rows is None else np.asarray(rows, dtype=np.int64))


def _split_names(split: str) -> tuple[str, ...]:
    from .images import _SPLIT_FOLDERS

    return _SPLIT_FOLDERS.get(split, (split,))


def audio_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Audio files under ``folder`` by extension (case-insensitive), sorted, hidden files and folders skipped."""
    if not recursive:
        candidates = [p for p in folder.iterdir() if p.is_file()]
    else:
        candidates = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            candidates += [Path(dirpath) / f for f in filenames]
    return sorted(p for p in candidates if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


def _folder_listing(root: Path, split: str, label_names, require_labels):
    from .images import _split_folder, folder_classes

    root = _split_folder(root, split)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = audio_files(root, recursive=False)
    if not subdirs or (loose and not require_labels):
        found = audio_files(root, recursive=True)
        if not found:
            raise UserError(f"found no audio under '{root}' (no {', '.join(AUDIO_EXTENSIONS)} files). Expected "
                            f"root/<class>/<clip>.wav, or a folder of clips for unlabeled audio; check the path.")
        if require_labels:
            raise UserError(f"'{root}' holds {len(found)} clips but no class sub-folders, so they have no labels. "
                            f"Put each class's clips in a sub-folder named after it (root/<class>/<clip>), or read "
                            f"them unlabeled (require_labels=False).")
        return found, None, label_names, root
    if loose:
        print(f"{root}: ignored {len(loose)} clip(s) directly in the folder (not in a class sub-folder).",
              file=sys.stderr)
    names = folder_classes(subdirs, label_names)
    ids = {name: k for k, name in enumerate(names)}
    files, labels = [], []
    for d in subdirs:
        found = audio_files(d)
        if not found:
            raise UserError(f"class folder '{d}' holds no audio ({', '.join(AUDIO_EXTENSIONS)}). Remove the folder, "
                            f"or add its clips.")
        files += found
        labels += [ids[d.name]] * len(found)
    return files, np.asarray(labels, dtype=np.int64), names, root


def _csv_listing(path: Path, path_col, label_col, label_names, require_labels):
    """(files, labels or None, label names, "file:line" of each row, row lines) of a CSV of path,label."""
    from .images import csv_listing

    files, labels, names, rows = csv_listing(path, path_col, label_col, label_names, require_labels,
                                             AUDIO_PATH_COLUMNS, "clip")
    return files, labels, names, [f"{path}:{row}" for row in rows], rows


# --------------------------------------------------------------------------------------------------- features + cache


def cache_root(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TRANSFERLAB_CACHE")
    return Path(env) / "audio" if env else Path.home() / ".cache" / "transferlab" / "audio"


def _features(files: list[Path], where: list[str], settings: MelSettings, cache_dir, source: str, notes: _Notes,
              progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(features (F, n_mels) float16, lengths (N,)) of ``files``: from the cache when a complete entry exists,
    else computed (into the cache when the set is large or ``cache_dir`` is given, else in memory)."""
    from .images import _file_identity

    identities = [_file_identity(p) for p in files]
    cached = cache_dir is not None or sum(i[1] for i in identities) > CACHE_MIN_BYTES
    if not cached:
        frames = list(_compute(files, where, settings, notes, progress))
        lengths = np.array([len(f) for f in frames], dtype=np.int64)
        return np.concatenate(frames).astype(np.float16), lengths
    h = hashlib.sha256(f"transferlab-audio-v{_CACHE_VERSION}".encode())
    h.update(repr(sorted(settings.to_dict().items())).encode())
    for identity in identities:
        h.update(repr(identity).encode() + b"\0")
    entry = cache_root(cache_dir) / f"audio-{h.hexdigest()[:32]}"
    opened = open_features(entry, len(files), settings.n_mels)
    if opened is not None:
        return opened
    _write_cache(entry, files, where, settings, notes, progress, source)
    opened = open_features(entry, len(files), settings.n_mels)
    if opened is None:
        raise UserError(f"the audio feature cache '{entry}' was written but cannot be read back; delete it and run "
                        f"again.")
    return opened


def _compute(files, where, settings, notes, progress):
    """Log-mel frames (float16) of each file in turn."""
    transform = LogMel(settings)
    items = list(zip(files, where))
    if progress and len(items) > PROGRESS_MIN_FILES:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="log-mel features", unit="clip", file=sys.stderr, dynamic_ncols=True)
    for path, w in items:
        yield clip_features(read_wave(path, settings.sample_rate, notes, w), transform, w).astype(np.float16)


def _write_cache(entry: Path, files, where, settings, notes, progress, source: str) -> None:
    from ..fsutil import atomic_dir, write_json

    lengths = []
    with atomic_dir(entry) as tmp:
        try:
            with open(tmp / "features.bin", "wb") as f:
                for frames in _compute(files, where, settings, notes, progress):
                    f.write(frames.tobytes())
                    lengths.append(len(frames))
        except OSError as e:
            raise UserError(f"cannot write the audio feature cache under '{entry.parent}' (features of {source}): "
                            f"{e.strerror or e}. Free disk space, or point cache_dir (or $TRANSFERLAB_CACHE) at a "
                            f"writable disk with room.") from None
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        write_json(tmp / "meta.json", {"format": "transferlab-audio/1", "version": _CACHE_VERSION,
                                       "settings": settings.to_dict(), "clips": len(lengths),
                                       "frames": int(sum(lengths)), "dtype": "float16", "source": source})


def open_features(entry: Path, n_clips: int, n_mels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(memory-mapped features, lengths) of a complete cache entry for ``n_clips`` clips, else None."""
    try:
        offsets = np.load(entry / "offsets.npy")
        frames = int(offsets[-1])
        size = (entry / "features.bin").stat().st_size
    except (OSError, ValueError, IndexError, EOFError):
        return None
    if len(offsets) != n_clips + 1 or size != frames * n_mels * 2:
        return None
    features = np.memmap(entry / "features.bin", dtype=np.float16, mode="r", shape=(frames, n_mels))
    return features, np.diff(offsets)


def feature_stats(data: AudioSet, max_frames: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and std (float64, (n_mels,)) over the frames of ``data`` (an even sample of at most
    ``max_frames`` of them), read in chunks so a memory-mapped corpus is never loaded whole."""
    total = int(data.lengths.sum())
    step = max(1, total // max_frames)
    s = np.zeros(data.n_mels)
    ss = np.zeros(data.n_mels)
    n = 0
    for i in range(len(data)):
        x = np.asarray(data.clip(i)[::step], dtype=np.float64)
        s += x.sum(0)
        ss += np.square(x).sum(0)
        n += len(x)
    mean = s / max(n, 1)
    return mean, np.sqrt(np.maximum(ss / max(n, 1) - mean**2, 0.0))
