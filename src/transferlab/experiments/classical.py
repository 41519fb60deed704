"""The hand-designed references: TF-IDF (text), HOG (images) or MFCC statistics (audio) + a linear model
(scikit-learn).

Small labeled sets are where hand-designed features still compete with transferred networks, so every comparison
shows this line. Single sentences use word uni- and bigram TF-IDF. Sentence pairs (MRPC) use the classic
paraphrase features instead of one bag over both sentences: the element-wise product of the two TF-IDF vectors
(shared words, weighted), their absolute difference (words only one side has), and their cosine similarity.
Images use histograms of oriented gradients (Dalal & Triggs 2005), the classic hand-designed image feature: local
edge directions, normalised over blocks of cells so that exposure and contrast matter little. Audio uses MFCC
statistics (mean and spread over a clip of the cepstrum and its deltas), the classic spoken-digit baseline.
"""

from __future__ import annotations

import numpy as np

from ..data.labeled import LabeledSet
from ..errors import UserError
from ..evaluation.metrics import compute_metrics


def _features(vectorizer, data: LabeledSet, fit: bool):
    from scipy import sparse

    if data.texts_b is None:
        return vectorizer.fit_transform(data.texts_a) if fit else vectorizer.transform(data.texts_a)
    if fit:
        vectorizer.fit(data.texts_a + data.texts_b)
    a, b = vectorizer.transform(data.texts_a), vectorizer.transform(data.texts_b)
    product = a.multiply(b).tocsr()
    cosine = sparse.csr_matrix(np.asarray(product.sum(axis=1)))  # rows are L2-normalised
    return sparse.hstack([product, abs(a - b), cosine]).tocsr()


def tfidf_linear(train: LabeledSet, dev: LabeledSet, metrics: list[str], seed: int = 0, C: float = 1.0,
                 ngram_max: int = 2, max_features: int = 100_000) -> tuple[dict, int]:
    """Fit TF-IDF + logistic regression (ridge regression for a regression task) and score ``dev``.

    Args:
        train, dev: labeled sets of the same task.
        metrics: metric names (``evaluation.metrics``).
        C: inverse regularisation strength (ridge uses alpha = 1 / C).
    Returns:
        ({"loss": ..., metric: ...}, number of fitted parameters).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    vectorizer = TfidfVectorizer(ngram_range=(1, ngram_max), sublinear_tf=True, max_features=max_features,
                                 lowercase=True)
    x_train = _features(vectorizer, train, fit=True)
    x_dev = _features(vectorizer, dev, fit=False)
    y_train, y_dev = np.asarray(train.labels), np.asarray(dev.labels)
    if train.task == "regression":
        model = Ridge(alpha=1.0 / C, random_state=seed).fit(x_train, y_train)
        preds = model.predict(x_dev)
        loss = float(np.mean((preds - y_dev) ** 2))
        metrics_dev = {"loss": loss, **compute_metrics(metrics, preds, y_dev)}
    else:
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x_train, y_train)
        metrics_dev = _score_classifier(model, x_dev, y_dev, train.num_labels, metrics)
    n_params = int(np.size(model.coef_) + np.size(model.intercept_))
    return metrics_dev, n_params


def _score_classifier(model, x, y: np.ndarray, num_labels: int | None, metrics: list[str]) -> dict:
    """Cross-entropy and the named metrics of a fitted sklearn classifier, from its class probabilities."""
    probs = model.predict_proba(x)
    # Columns follow model.classes_, which may miss a class the tiny training subset never saw.
    full = np.full((len(y), num_labels or probs.shape[1]), 1e-12)
    full[:, model.classes_] = probs
    loss = float(-np.mean(np.log(np.clip(full[np.arange(len(y)), y], 1e-12, None))))
    preds = model.classes_[probs.argmax(1)]
    return {"loss": loss, **compute_metrics(metrics, preds, y, scores=full)}


def hog_features(images: np.ndarray, orientations: int = 9, pixels_per_cell: tuple[int, int] = (4, 4),
                 cells_per_block: tuple[int, int] = (2, 2)) -> np.ndarray:
    """HOG descriptors of a stack of images, with scikit-image's ``hog`` (L2-Hys block normalisation).

    One ``hog`` call per image: it takes a single image, and three quarters of its time is its own Python loop over
    blocks, which a mosaic of many images in one call would run just as often (PneumoniaMNIST's 4,708 28x28 train
    images: 2.5 s on one core). Colour images use ``channel_axis``: each pixel's gradient comes from its strongest
    channel, Dalal and Triggs' choice, which keeps a colour edge that a gray conversion could cancel.

    Args:
        images: (N, H, W, C) uint8, C = 1 or 3.
    Returns:
        (N, F) float32; F = blocks x cells per block x orientations (1,296 for 28x28 with the defaults).
    """
    from skimage.feature import hog

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"HOG features need images as (N, H, W, C) with C = 1 or 3, got shape {images.shape}.")
    _, h, w, c = images.shape
    need = (pixels_per_cell[0] * cells_per_block[0], pixels_per_cell[1] * cells_per_block[1])
    if h < need[0] or w < need[1]:
        raise UserError(f"HOG with pixels_per_cell={tuple(pixels_per_cell)} and cells_per_block="
                        f"{tuple(cells_per_block)} needs images of at least {need[0]}x{need[1]} pixels, got {h}x{w}. "
                        f"Use smaller pixels_per_cell or cells_per_block.")
    options = dict(orientations=orientations, pixels_per_cell=tuple(pixels_per_cell),
                   cells_per_block=tuple(cells_per_block), block_norm="L2-Hys", feature_vector=True)
    if c == 1:
        return np.stack([hog(img[:, :, 0], **options) for img in images]).astype(np.float32)
    return np.stack([hog(img, channel_axis=-1, **options) for img in images]).astype(np.float32)


def hog_linear(train, dev, metrics: list[str], seed: int = 0, C: float = 1.0, orientations: int = 9,
               pixels_per_cell: tuple[int, int] = (4, 4), cells_per_block: tuple[int, int] = (2, 2),
               test=None) -> tuple[dict, int]:
    """Fit HOG features + standardisation + logistic regression on ``train`` and score ``dev`` (and ``test``).

    Args:
        train, dev, test: image sets with ``images`` (N, H, W, C) uint8, ``labels`` (N,) class ids,
            ``label_names`` and ``task == "classification"``, all of one image size.
        metrics: metric names (``evaluation.metrics``); ``roc_auc`` is scored from the predicted probabilities.
        C: inverse regularisation strength of the logistic regression.
        orientations, pixels_per_cell, cells_per_block: the HOG settings (``hog_features``).
    Returns:
        ({"loss": ..., metric: ...}, number of fitted parameters), as ``tfidf_linear``; with ``test`` the same
        dict also holds ``test_loss`` and ``test_<metric>`` (one flat dict of floats, like Keras' ``val_``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sets = {"train": train, "dev": dev} if test is None else {"train": train, "dev": dev, "test": test}
    for name, data in sets.items():
        if getattr(data, "task", "classification") != "classification":
            raise UserError(f"the HOG pipeline classifies images, but the {name} set's task is {data.task!r}. "
                            f"Use a classification image set.")
    size = np.shape(train.images)[1:]
    for name, data in sets.items():
        if np.shape(data.images)[1:] != size:
            raise UserError(f"the {name} images are {np.shape(data.images)[1:]} (H, W, C) but the train images "
                            f"are {size}; HOG features compare only images of one size. Resize the {name} set to "
                            f"match.")
    hog_options = dict(orientations=orientations, pixels_per_cell=pixels_per_cell, cells_per_block=cells_per_block)
    labels = {name: np.asarray(data.labels, dtype=np.int64).reshape(-1) for name, data in sets.items()}
    if len(np.unique(labels["train"])) < 2:
        raise UserError(f"the train set holds one class only ({len(labels['train'])} images of class "
                        f"{labels['train'][0]}); a classifier needs examples of at least two. Use a larger or "
                        f"stratified training subset.")
    scaler = StandardScaler()
    x_train = scaler.fit_transform(hog_features(train.images, **hog_options))
    # Enough iterations for lbfgs on standardised HOG: PneumoniaMNIST's full train set converges in ~60.
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x_train, labels["train"])
    names = getattr(train, "label_names", None)
    num_labels = len(names) if names else int(max(y.max() for y in labels.values())) + 1
    out = {}
    for name in [n for n in sets if n != "train"]:
        x = scaler.transform(hog_features(sets[name].images, **hog_options))
        scored = _score_classifier(model, x, labels[name], num_labels, metrics)
        out.update(scored if name == "dev" else {f"test_{k}": v for k, v in scored.items()})
    return out, int(np.size(model.coef_) + np.size(model.intercept_))


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The orthonormal DCT-II as a (n_out, n_in) matrix: MFCCs are its first rows applied to log-mel frames."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None]
    d = np.sqrt(2.0 / n_in) * np.cos(np.pi / n_in * (n + 0.5) * k)
    d[0] /= np.sqrt(2.0)
    return d


def deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """HTK's regression deltas of (T, D) coefficients over +-``width`` frames (edges repeated)."""
    padded = np.pad(c, ((width, width), (0, 0)), mode="edge")
    T = len(c)
    num = sum(n * (padded[width + n:width + n + T] - padded[width - n:width - n + T]) for n in range(1, width + 1))
    return num / (2 * sum(n * n for n in range(1, width + 1)))


def mfcc_statistics(data, n_mfcc: int = 13) -> np.ndarray:
    """MFCC statistics of every clip of an ``AudioSet``: the mean and standard deviation over frames of the first
    ``n_mfcc`` MFCCs (the DCT of the log-mel frames the networks read, so both sides see the same spectrogram) and
    of their deltas. The classic fixed-length description of a spoken word for a linear classifier.

    Returns:
        (N, 4 * n_mfcc) float32.
    """
    if not 1 <= n_mfcc <= data.n_mels:
        raise UserError(f"n_mfcc={n_mfcc} must be between 1 and the {data.n_mels} mel bins of the features.")
    dct = dct_matrix(n_mfcc, data.n_mels).T  # (n_mels, n_mfcc)
    out = np.empty((len(data), 4 * n_mfcc), dtype=np.float32)
    for i in range(len(data)):
        c = np.asarray(data.clip(i), dtype=np.float64) @ dct  # (T, n_mfcc)
        d = deltas(c)
        out[i] = np.concatenate([c.mean(0), c.std(0), d.mean(0), d.std(0)])
    return out


def mfcc_linear(train, dev, metrics: list[str], seed: int = 0, C: float = 1.0, n_mfcc: int = 13,
                test=None) -> tuple[dict, int]:
    """Fit MFCC statistics + standardisation + logistic regression on ``train`` and score ``dev`` (and ``test``).

    Args:
        train, dev, test: ``AudioSet``s of one task, with features computed with the same mel settings.
        metrics: metric names (``evaluation.metrics``).
        C: inverse regularisation strength of the logistic regression.
        n_mfcc: MFCCs per frame (``mfcc_statistics``).
    Returns:
        as ``hog_linear``: ({"loss": ..., metric: ..., and test_* keys with ``test``}, number of fitted parameters).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sets = {"train": train, "dev": dev} if test is None else {"train": train, "dev": dev, "test": test}
    for name, data in sets.items():
        if data.labels is None:
            raise UserError(f"the MFCC pipeline classifies clips, but the {name} set ({data.source}) has no labels.")
        if data.settings != train.settings:
            raise UserError(f"the {name} clips' features were computed with other mel settings than the train "
                            f"clips'; read every split with the same settings.")
    labels = {name: np.asarray(data.labels, dtype=np.int64) for name, data in sets.items()}
    if len(np.unique(labels["train"])) < 2:
        raise UserError(f"the train set holds one class only ({len(labels['train'])} clips); a classifier needs "
                        f"examples of at least two. Use a larger or stratified training subset.")
    scaler = StandardScaler()
    x_train = scaler.fit_transform(mfcc_statistics(train, n_mfcc))
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x_train, labels["train"])
    num_labels = train.num_labels or int(max(y.max() for y in labels.values())) + 1
    out = {}
    for name in [n for n in sets if n != "train"]:
        x = scaler.transform(mfcc_statistics(sets[name], n_mfcc))
        scored = _score_classifier(model, x, labels[name], num_labels, metrics)
        out.update(scored if name == "dev" else {f"test_{k}": v for k, v in scored.items()})
    return out, int(np.size(model.coef_) + np.size(model.intercept_))
