"""The saved preprocessors, one per modality: how raw data becomes the tensors a backbone reads.

- text: ``Tokenizer`` (inputs/text.py), saved as ``tokenizer.json`` beside the weights;
- image: ``ImageInputs`` (inputs/image.py): size, channels and normalisation, recorded in ``config.json``;
- audio: ``AudioInputs`` (inputs/audio.py): sample rate, mel settings and normalisation, recorded in ``config.json``.

Every preprocessor has ``modality`` and ``unit`` (what throughput counts), ``record()`` (the config.json entries
that describe it), ``save(directory)`` (its files, if any), ``from_checkpoint(directory, config)`` and
``check_fits(backbone_config_dict, where)``, and ``examples(data, backbone_config, max_len, augment)``, which turns
a labeled set of its modality into batchable examples. A checkpoint records its preprocessor; loading one gives
it back, so a model always meets its data prepared the way it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

MODALITIES = ("text", "image", "audio")


def modality(config: dict) -> str:
    """The modality a checkpoint's config.json records (checkpoints from before inputs were recorded are text)."""
    return (config.get("inputs") or {}).get("modality", "text")


def preprocessor_class(name: str):
    if name == "text":
        from .text import Tokenizer

        return Tokenizer
    if name == "image":
        from .image import ImageInputs

        return ImageInputs
    if name == "audio":
        from .audio import AudioInputs

        return AudioInputs
    raise UserError(f"unknown input modality '{name}'; this version reads {', '.join(MODALITIES)}. The checkpoint "
                    f"was written by a newer transferlab.")


def load_inputs(directory: str | Path, config: dict):
    """The preprocessor a checkpoint directory was trained with, checked against its backbone."""
    inputs = preprocessor_class(modality(config)).from_checkpoint(directory, config)
    inputs.check_fits(config["backbone"], str(directory))
    return inputs


# Reader options of one modality only: giving them for the other is a mistake worth naming.
TEXT_OPTIONS = ("text_cols", "skip_bad_rows", "header", "format", "encoding", "coarse_labels")
IMAGE_OPTIONS = ("resize", "path_col", "cache_dir")
AUDIO_OPTIONS = ("path_col", "cache_dir")
MODALITY_OPTIONS = {"text": TEXT_OPTIONS, "image": IMAGE_OPTIONS, "audio": AUDIO_OPTIONS}


def labeled_data(inputs, x, y=None, *, task: str = "classification", label_names: list[str] | None = None,
                 require_labels: bool = False, split: str | None = "train", **options):
    """A labeled set of ``inputs``' modality from what a user hands a model: a labeled set already read, a file
    or folder, or Python data (texts or text pairs; an image array) with labels ``y``. ``options`` go to the
    modality's reader: ``text_cols``, ``label_col``, ``skip_bad_rows`` for text files; ``resize``,
    ``label_col``, ``path_col`` for images; ``label_col``, ``path_col`` for audio (waveforms in Python are a list
    of 1-D arrays at the model's sample rate). ``split`` picks the split of a directory or ``.npz`` holding several;
    None means the one evaluation reads: dev for text (GLUE's test has no labels), test for images and audio."""
    from ..data.labeled import LabeledSet

    kind = inputs.modality
    if split is None:
        split = "dev" if kind == "text" else "test"
    mine = MODALITY_OPTIONS[kind]
    others = list(dict.fromkeys(k for m, keys in MODALITY_OPTIONS.items() if m != kind for k in keys if k not in mine))
    # header=False is a given option too (its default is True)
    wrong = [k for k in others if options.get(k) or (k == "header" and options.get(k) is False)]
    if wrong:
        owner = next(m for m, keys in MODALITY_OPTIONS.items() if wrong[0] in keys)
        raise UserError(f"{', '.join(wrong)} apply to {owner} data; this model reads {kind}.")
    options = {k: v for k, v in options.items() if k not in others}
    if isinstance(x, (str, Path)):
        check_data_modality(x, kind, "the data")
    if kind == "audio":
        return _audio_data(inputs, x, y, label_names, require_labels, split, options)
    if kind == "image":
        from ..data.images import ImageSet, read_images

        if isinstance(x, LabeledSet):
            raise UserError(f"{x.source} holds text, but this model reads images; fine-tune a text checkpoint on it.")
        if isinstance(x, ImageSet):
            return inputs.check_data(x)
        if isinstance(x, (str, Path)):
            return inputs.check_data(read_images(x, split, label_names=label_names, require_labels=require_labels,
                                                 **options))
        if isinstance(x, tuple) and len(x) == 2 and y is None:
            x, y = x
        return inputs.check_data(ImageSet.from_arrays(x, y, label_names=label_names))
    if not isinstance(x, (LabeledSet, str, Path, tuple, list)):
        raise UserError(f"this model reads text; got {type(x).__name__}. Pass a labeled file, texts (or pairs of "
                        f"texts) and labels.")
    if isinstance(x, LabeledSet):
        return x
    if isinstance(x, (str, Path)):
        from ..data.labeled import find_split, read_labeled

        path = find_split(x, split) if Path(x).is_dir() and options.get("format") != "files-per-class" else x
        return read_labeled(path, label_names=label_names, task=task, require_labels=require_labels, **options)
    if isinstance(x, tuple) and len(x) == 2 and y is None:
        x, y = x
    texts = list(x)
    pairs = bool(texts) and isinstance(texts[0], (tuple, list))
    a = [t[0] for t in texts] if pairs else [str(t) for t in texts]
    b = [t[1] for t in texts] if pairs else None
    labels = None if y is None else [float(v) if task == "regression" else int(v) for v in y]
    if labels is not None and len(labels) != len(a):
        raise UserError(f"got {len(a)} texts but {len(labels)} labels.")
    if require_labels and labels is None:
        raise UserError("training needs labels: pass them as y (or a labeled file).")
    return LabeledSet(a, b, labels, task, label_names, "<in-memory>", list(range(1, len(a) + 1)), [])


def _audio_data(inputs, x, y, label_names, require_labels: bool, split: str, options: dict):
    from ..data.audio import AudioSet, read_audio
    from ..data.images import ImageSet
    from ..data.labeled import LabeledSet

    if isinstance(x, (LabeledSet, ImageSet)):
        found = "text" if isinstance(x, LabeledSet) else "images"
        raise UserError(f"{x.source} holds {found}, but this model reads audio; fine-tune a checkpoint of that "
                        f"modality on it.")
    if isinstance(x, AudioSet):
        return inputs.check_data(x)
    if isinstance(x, (str, Path)):
        return inputs.check_data(read_audio(x, split, settings=inputs.settings, label_names=label_names,
                                            require_labels=require_labels, **options))
    if isinstance(x, tuple) and len(x) == 2 and y is None:
        x, y = x
    if require_labels and y is None:
        raise UserError("training needs labels: pass them as y (or a labeled folder or CSV).")
    return AudioSet.from_waveforms(list(x), y, settings=inputs.settings, label_names=label_names)


TEXT_SUFFIXES = (".tsv", ".jsonl", ".txt", ".tsv.gz", ".jsonl.gz", ".txt.gz", ".csv.gz")


def data_modality(path: str | Path) -> str | None:
    """What a data path holds, judged from names alone (no decoding): "image" for idx files, ``.npz``, image
    files and folders of them, and CSVs with an image-path column; "audio" for audio files, folders of them
    (flat or one level of class folders) and CSVs whose first path names an audio file; "text" for TSV / JSONL /
    text files and other CSVs; None when it cannot tell."""
    from ..data.audio import AUDIO_EXTENSIONS, AUDIO_PATH_COLUMNS
    from ..data.images import IMAGE_EXTENSIONS, PATH_COLUMN_CANDIDATES

    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        names = [p.name.lower() for p in path.iterdir()]
        if any("idx3-ubyte" in n or n.endswith(".npz") for n in names):
            return "image"
        if any(n.endswith(TEXT_SUFFIXES) for n in names):
            return "text"
        inner = [q.name.lower() for p in path.iterdir() if p.is_dir() for q in list(p.iterdir())[:20]]
        if any(n.endswith(IMAGE_EXTENSIONS) for n in inner):
            return "image"
        if any(n.endswith(AUDIO_EXTENSIONS) for n in names + inner):
            return "audio"
        for split in ("train", "test", "val", "dev"):  # a directory of split CSVs
            if (path / f"{split}.csv").is_file():
                return data_modality(path / f"{split}.csv")
        return None
    if "idx3-ubyte" in name or name.endswith((".npz", *IMAGE_EXTENSIONS)):
        return "image"
    if name.endswith(AUDIO_EXTENSIONS):
        return "audio"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    if name.endswith(".csv") and path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            header = [c.strip().strip('"').lower() for c in f.readline().split(",")]
            first = [c.strip().strip('"').lower() for c in f.readline().split(",")]
        paths = [v for c, v in zip(header, first) if c in set(PATH_COLUMN_CANDIDATES) | set(AUDIO_PATH_COLUMNS)]
        if any(v.endswith(AUDIO_EXTENSIONS) for v in paths):
            return "audio"
        return "image" if set(header) & set(PATH_COLUMN_CANDIDATES) else "text"
    return None


def check_data_modality(path: str | Path, expected: str, option: str) -> None:
    """Refuse data of one modality given to a model of another, naming the option and the fix."""
    found = data_modality(path)
    if found is not None and found != expected:
        fix = {"image": "pretrain an image model first (`transferlab pretrain --objective supervised --data ...`) "
                        "or start from one",
               "audio": "pretrain an audio model first (`transferlab pretrain --objective masked-frames --data "
                        "AUDIO_FOLDER ...`) or start from one",
               "text": "fine-tune a text checkpoint (a `transferlab pretrain --corpus ...` run) on it"}[found]
        raise UserError(f"{option} '{path}' holds {found} data, but the checkpoint is a {expected} model; {fix}.")
