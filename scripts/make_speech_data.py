"""Synthesise a spoken-words corpus with espeak-ng: a large unlabeled part and a labeled spoken-digit part.

This is SYNTHETIC speech. It stands in for recordings (LibriSpeech for pretraining, the Free Spoken Digit Dataset
for the labeled task) on a machine that has neither, so the whole speech story (pretrain on unlabeled audio, transfer
to few labels, compare against scratch and MFCCs) can run offline. What it can show: whether pretraining on
unlabeled audio of many "speakers" helps recognise words from few labels, on speakers never seen in fine-tuning.
What it cannot: how any of this behaves on human speech. A formant synthesiser's voices differ from one another
along a few knobs (pitch, rate, a voice variant's formant shifts, an accent's phoneme rules); real speakers, rooms
and microphones differ in far more ways, so absolute accuracies here are not comparable with FSDD or Speech Commands.

A "speaker" is one espeak-ng setting: an English accent (8 voices: US, British, Scottish, Lancaster, RP, West
Midlands, Caribbean, New York) x a voice variant (42 human-like ones: m1..m8, f1..f5, klatt, ...) x a pitch (-p 20..80)
x a rate (-s 120..200 words per minute). Every (accent, variant) pair is used by one speaker at most, so the speaker
groups below never share one. Each utterance jitters pitch and rate a little, starts and ends with a random pause,
gets background noise (white, pink or brown, 5 to 30 dB SNR) and a random gain (peak -25 to -1 dBFS). Audio is
written at espeak-ng's own 22,050 Hz, 16-bit mono, so reading it exercises transferlab's resampling to 16 kHz.

Layout under --out (nothing is written there until the whole corpus is complete; it is built under a temporary
name and renamed):

    unlabeled/<speaker>/<n>.wav             sentences from ../shared/data/pretrain_corpus, one folder per speaker
    digits/{train,dev,test}/<digit>/<speaker>_<rep>.wav   the ten digits, FSDD-style; speakers disjoint between splits
    speakers.json                           every speaker's settings and group
    README.md                               this description and the counts

Usage (espeak-ng: `apt-get install -y espeak-ng`):

    python scripts/make_speech_data.py --out /work/data/speech --unlabeled-hours 4 --jobs 2
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "andy", "annie", "david", "ed", "edward", "gene", "john", "linda", "max", "michael",
            "paul", "rob", "robert", "steph", "travis", "victor", "benjamin", "belinda", "aunty", "grandpa", "iven",
            "quincy", "norbert", "shelby", "zac")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RATE = 22050  # espeak-ng's output rate
SENTENCE = re.compile(r"[^.!?]*[.!?]")


def speakers(n: int, rng: random.Random) -> list[dict]:
    """``n`` speakers, each with its own (accent, variant) pair, pitch and rate."""
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    if n > len(pairs):
        sys.exit(f"error: {n} speakers asked for, but only {len(pairs)} (accent, variant) pairs exist; ask for fewer.")
    rng.shuffle(pairs)
    return [{"id": f"s{i:03d}", "accent": a, "variant": v, "pitch": rng.randint(20, 80), "rate": rng.randint(120, 200)}
            for i, (a, v) in enumerate(pairs[:n])]


def sentences(corpus: Path, n: int, rng: random.Random) -> list[str]:
    """``n`` sentences of 6 to 25 plain words, drawn from the books and wiki text of the pretraining corpus."""
    files = sorted(corpus.glob("*/*.txt.gz"))
    if not files:
        sys.exit(f"error: no *.txt.gz files under '{corpus}'; pass --corpus ../shared/data/pretrain_corpus.")
    pool = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            text = f.read(400_000)  # the start of each document is plenty and keeps this fast
        for s in SENTENCE.findall(text.replace("\n", " ")):
            s = " ".join(s.split())
            words = s.split()
            # a plain sentence: starts with a capitalised word (a leading "-" would reach espeak-ng as an option)
            if (6 <= len(words) <= 25 and s.isascii() and re.match(r"[A-Z][a-z]", s)
                    and not re.search(r"[\d_*#<>\[\]{}|/\\@]", s)):
                pool.append(s)
    rng.shuffle(pool)
    return pool[:n]


def synthesise(text: str, speaker: dict, seed: int) -> np.ndarray:
    """One utterance as int16 at 22,050 Hz: espeak-ng with the speaker's settings (pitch and rate jittered), a
    random pause before and after, background noise and a random gain."""
    rng = np.random.default_rng(seed)
    pitch = int(np.clip(speaker["pitch"] + rng.integers(-6, 7), 0, 99))
    rate = int(speaker["rate"] * rng.uniform(0.92, 1.08))
    voice = f"{speaker['accent']}+{speaker['variant']}"
    out = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "--stdout", text],
                         capture_output=True, check=True).stdout
    # --stdout writes a streaming header (the data size unknown): the samples are everything after "data" + size.
    start = out.find(b"data") + 8
    speech = np.frombuffer(out[start:len(out) - (len(out) - start) % 2], dtype="<i2").astype(np.float64) / 32768
    if speech.size < RATE // 10 or np.abs(speech).max() == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {voice!r} saying {text!r}")
    pause = lambda: np.zeros(int(RATE * rng.uniform(0.05, 0.3)))  # noqa: E731
    x = np.concatenate([pause(), speech, pause()])
    x = x / np.abs(x).max()
    voiced = speech[np.abs(speech) > 0.02 * np.abs(speech).max()]
    signal_power = float(np.mean((voiced / np.abs(speech).max()) ** 2))
    noise = coloured_noise(len(x), rng.choice(["white", "pink", "brown"]), rng)
    snr_db = rng.uniform(5, 30)
    x = x + noise * np.sqrt(signal_power / 10 ** (snr_db / 10))
    x = x / np.abs(x).max() * 10 ** (rng.uniform(-25, -1) / 20)
    return np.round(x * 32767).astype(np.int16)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise whose power falls as 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    spectrum *= f ** -{"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    x = np.fft.irfft(spectrum, n)
    return x / np.sqrt(np.mean(x**2))


def write_wav(path: Path, samples: np.ndarray) -> None:
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    wavfile.write(buf, RATE, samples)
    path.write_bytes(buf.getvalue())


def job(item: tuple) -> float:
    """(path, text, speaker, seed) -> seconds of audio written."""
    path, text, speaker, seed = item
    samples = synthesise(text, speaker, seed)
    write_wav(Path(path), samples)
    return len(samples) / RATE


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the corpus directory to create (outside the repository)")
    p.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain_corpus"))
    p.add_argument("--unlabeled-hours", type=float, default=4.0, help="about this much unlabeled speech")
    p.add_argument("--unlabeled-speakers", type=int, default=200)
    p.add_argument("--train-speakers", type=int, default=48)
    p.add_argument("--dev-speakers", type=int, default=12)
    p.add_argument("--test-speakers", type=int, default=20)
    p.add_argument("--reps", type=int, default=5, help="recordings of each digit per speaker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="espeak-ng processes at once")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        sys.exit("error: espeak-ng is not installed; install it with `apt-get install -y espeak-ng`.")
    out = Path(a.out)
    if out.exists() and any(out.iterdir()) and not a.overwrite:
        sys.exit(f"error: '{out}' already exists; pass --overwrite to replace it, or choose another --out.")
    rng = random.Random(a.seed)
    groups = {"unlabeled": a.unlabeled_speakers, "train": a.train_speakers, "dev": a.dev_speakers,
              "test": a.test_speakers}
    everyone = speakers(sum(groups.values()), rng)
    by_group, i = {}, 0
    for group, n in groups.items():
        by_group[group] = everyone[i:i + n]
        for s in by_group[group]:
            s["group"] = group
        i += n
    # espeak-ng speaks about 2.7 words a second at these rates, plus the pauses
    n_sentences = int(a.unlabeled_hours * 3600 / 5.0)
    texts = sentences(Path(a.corpus), n_sentences, rng)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    items = []
    for k, text in enumerate(texts):
        s = by_group["unlabeled"][k % len(by_group["unlabeled"])]
        items.append((str(tmp / "unlabeled" / s["id"] / f"{k:06d}.wav"), text, s, a.seed * 10**7 + k))
    for split in ("train", "dev", "test"):
        for s in by_group[split]:
            for d, word in enumerate(DIGITS):
                for r in range(a.reps):
                    items.append((str(tmp / "digits" / split / str(d) / f"{s['id']}_{r}.wav"), word, s,
                                  a.seed * 10**7 + 5 * 10**6 + len(items)))
    start = time.time()
    seconds = {"unlabeled": 0.0, "digits": 0.0}
    try:
        with ProcessPoolExecutor(a.jobs) as pool:
            for n, ((path, *_), length) in enumerate(zip(items, pool.map(job, items, chunksize=16)), 1):
                seconds["digits" if "/digits/" in path else "unlabeled"] += length
                if n % 500 == 0 or n == len(items):
                    print(f"{n}/{len(items)} utterances, {sum(seconds.values()) / 3600:.2f} h, "
                          f"{time.time() - start:.0f} s", file=sys.stderr)
        counts = {split: len(by_group[split]) * len(DIGITS) * a.reps for split in ("train", "dev", "test")}
        (tmp / "speakers.json").write_text(json.dumps(everyone, indent=1) + "\n")
        (tmp / "README.md").write_text(
            "# Synthetic spoken words (espeak-ng)\n\n" + __doc__.split("\n\n", 1)[1].split("Usage")[0]
            + f"\n## This copy\n\nMade by `python scripts/make_speech_data.py {' '.join(sys.argv[1:])}` in "
            f"{time.time() - start:.0f} s.\n\n- unlabeled: {len(texts)} sentences, "
            f"{seconds['unlabeled'] / 3600:.2f} h, {a.unlabeled_speakers} speakers\n- digits: {sum(counts.values())} "
            f"clips, {seconds['digits'] / 3600:.2f} h; "
            f"train {counts['train']} ({a.train_speakers} speakers), dev {counts['dev']} ({a.dev_speakers}), test "
            f"{counts['test']} ({a.test_speakers}); {a.reps} recordings of each digit per speaker\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}: {seconds['unlabeled'] / 3600:.2f} h unlabeled, {seconds['digits'] / 3600:.2f} h of digits",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
