"""The hand-designed reference: TF-IDF features + a linear model (scikit-learn).

Small labeled sets are where hand-designed features still compete with transferred networks, so every comparison
shows this line. Single sentences use word uni- and bigram TF-IDF. Sentence pairs (MRPC) use the classic
paraphrase features instead of one bag over both sentences: the element-wise product of the two TF-IDF vectors
(shared words, weighted), their absolute difference (words only one side has), and their cosine similarity.
"""

from __future__ import annotations

import numpy as np

from ..data.labeled import LabeledSet
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
    else:
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x_train, y_train)
        probs = model.predict_proba(x_dev)
        # Columns follow model.classes_, which may miss a class the tiny training subset never saw.
        full = np.full((len(y_dev), train.num_labels or probs.shape[1]), 1e-12)
        full[:, model.classes_] = probs
        loss = float(-np.mean(np.log(np.clip(full[np.arange(len(y_dev)), y_dev], 1e-12, None))))
        preds = model.classes_[probs.argmax(1)]
    n_params = int(np.size(model.coef_) + np.size(model.intercept_))
    return {"loss": loss, **compute_metrics(metrics, preds, y_dev)}, n_params
