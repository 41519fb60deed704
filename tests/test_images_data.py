"""Image readers: idx, npz, class folders and CSVs round-trip exactly; every bad input is a UserError naming the
file; large sets decode once into a memory-mapped cache."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from conftest import SHARED_DATA
from transferlab.data import images as im_mod
from transferlab.data.images import ImageSet, read_images
from transferlab.errors import UserError

Image = pytest.importorskip("PIL.Image")


def pixels(n, h=5, w=4, c=1, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def write_idx(path, data: np.ndarray, kind: str) -> None:
    """An idx file as MNIST writes it: big-endian magic and sizes, then the bytes."""
    magic = 2051 if kind == "images" else 2049
    header = np.array([magic, *data.shape], dtype=">i4").tobytes()
    blob = header + data.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def write_mnist(d, prefix="train", n=6, gz=True, seed=0):
    x = pixels(n, 7, 6, seed=seed)[..., 0]
    y = np.arange(n, dtype=np.uint8) % 3
    ext = ".gz" if gz else ""
    write_idx(d / f"{prefix}-images-idx3-ubyte{ext}", x, "images")
    write_idx(d / f"{prefix}-labels-idx1-ubyte{ext}", y, "labels")
    return x, y


def save(path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)


def class_tree(root, per_class=2, c=1, h=5, w=4, classes=("cat", "ant", "dog")):
    """root/<class>/<i>.png with known pixels; returns {class: [arrays in file order]}."""
    out = {}
    for k, name in enumerate(classes):
        arrs = list(pixels(per_class, h, w, c, seed=k + 10))
        for i, a in enumerate(arrs):
            save(root / name / f"{i}.png", a)
        out[name] = arrs
    return out


# ------------------------------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_directory_and_file(tmp_path, gz):
    x, y = write_mnist(tmp_path, gz=gz)
    xt, yt = write_mnist(tmp_path, "t10k", n=4, gz=gz, seed=1)
    s = read_images(tmp_path)
    assert s.images.shape == (6, 7, 6, 1) and s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.images[..., 0], x)
    np.testing.assert_array_equal(s.labels, y)
    assert s.labels.dtype == np.int64 and s.label_names == ["0", "1", "2"] and s.num_labels == 3
    ext = ".gz" if gz else ""
    assert s.names[3] == f"train-images-idx3-ubyte{ext}[3]" and s.lines[:2] == [1, 2]
    t = read_images(tmp_path, "test")
    np.testing.assert_array_equal(t.images[..., 0], xt)
    np.testing.assert_array_equal(t.labels, yt)
    direct = read_images(tmp_path / f"t10k-images-idx3-ubyte{ext}")  # labels found beside it by name
    np.testing.assert_array_equal(direct.labels, yt)


def test_idx_labels_given_and_missing(tmp_path):
    write_mnist(tmp_path)
    s = read_images(tmp_path, label_names=["2", "1", "0"])  # the given order is the id order
    np.testing.assert_array_equal(s.labels, 2 - np.arange(6) % 3)
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz.*label 2 .*known classes \['0', '1'\]"):
        read_images(tmp_path, label_names=["0", "1"])
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="no labels file beside .*train-images-idx3-ubyte.gz"):
        read_images(tmp_path)
    assert read_images(tmp_path, require_labels=False).labels is None


def test_idx_bad_files(tmp_path):
    x, _ = write_mnist(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    with pytest.raises(UserError, match="none for split 'val'.*only train and test"):
        read_images(tmp_path, "val")
    with pytest.raises(UserError, match="is an idx labels file"):
        read_images(tmp_path / "train-labels-idx1-ubyte")
    good = images.read_bytes()
    images.write_bytes(good[:-5])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte': the idx header says 6 x 7 x 6 = 252 bytes.*"
                                        r"only 247.*Re-download"):
        read_images(images)
    images.write_bytes(good[:10])
    with pytest.raises(UserError, match="train-images-idx3-ubyte' is truncated: its idx header"):
        read_images(images)
    images.write_bytes(good + b"\0")
    with pytest.raises(UserError, match="holds more 253"):
        read_images(images)
    images.write_bytes(np.array([2049, 6], dtype=">i4").tobytes() + b"\0" * 20)
    with pytest.raises(UserError, match="magic number 2049, expected 2051 .*an idx labels file"):
        read_images(images)
    images.write_bytes(b"GIF89a" + b"\0" * 30)
    with pytest.raises(UserError, match="not an idx file"):
        read_images(images)
    write_idx(images, x[:5], "images")
    with pytest.raises(UserError, match="holds 5 images but .*train-labels-idx1-ubyte' holds 6 labels"):
        read_images(tmp_path)


def test_idx_truncated_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(UserError, match="cannot read .*train-images-idx3-ubyte.gz.*damaged or not gzip"):
        read_images(tmp_path)


# ------------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("c", [1, 3])
def test_npz_round_trip_and_split_aliases(tmp_path, c):
    f = tmp_path / "pneu.npz"
    train = pixels(5, c=c, seed=1)
    val = pixels(3, c=c, seed=2)
    np.savez(f, train_images=train[..., 0] if c == 1 else train, train_labels=np.array([[1], [0], [1], [1], [0]]),
             val_images=val[..., 0] if c == 1 else val, val_labels=np.array([4, 4, 7], dtype=np.uint8))
    s = read_images(f)
    np.testing.assert_array_equal(s.images, train)
    np.testing.assert_array_equal(s.labels, [1, 0, 1, 1, 0])
    assert s.channels == c and s.size == (5, 4) and s.names[2] == "pneu.npz:train[2]"
    for alias in ("val", "dev", "validation", "valid"):
        v = read_images(tmp_path, alias)  # a directory with one .npz reads it
        np.testing.assert_array_equal(v.images, val)
        assert v.label_names == ["4", "7"] and v.labels.tolist() == [0, 0, 1]
    with pytest.raises(UserError, match=r"pneu.npz' has no key 'test_images'.*Keys present: train_images, "
                                        r"train_labels, val_images, val_labels"):
        read_images(f, "test")
    with pytest.raises(UserError, match=r"pneu.npz': label 7 in val_labels \(first at index 2\) is not among the "
                                        r"known classes \['0', '4'\]"):
        read_images(f, "val", label_names=["0", "4"])


def test_npz_bad_inputs(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(UserError, match="bad.npz' is not a readable .npz archive"):
        read_images(bad)
    np.savez(bad, train_images=pixels(4)[..., 0], train_labels=np.zeros(4))
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(UserError, match="bad.npz"):
        read_images(bad)
    single = tmp_path / "one.npz"
    with open(single, "wb") as fh:
        np.save(fh, pixels(2))
    with pytest.raises(UserError, match="one.npz' holds a single array"):
        read_images(single)
    f = tmp_path / "d.npz"
    np.savez(f, train_images=pixels(4, c=2), train_labels=np.zeros(4))
    with pytest.raises(UserError, match=r"d.npz': train_images has shape \(4, 5, 4, 2\)"):
        read_images(f)
    np.savez(f, train_images=pixels(4)[..., 0], train_labels=np.zeros((4, 14)))
    with pytest.raises(UserError, match=r"d.npz': train_labels has shape \(4, 14\).*Multi-label"):
        read_images(f)
    np.savez(f, train_images=pixels(4)[..., 0])
    with pytest.raises(UserError, match="d.npz' has 'train_images' but no 'train_labels'"):
        read_images(f)
    assert read_images(f, require_labels=False).labels is None


# ------------------------------------------------------------------------------------------------- folders


@pytest.mark.parametrize("c", [1, 3])
def test_folder_round_trip(tmp_path, c):
    made = class_tree(tmp_path, c=c)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    s = read_images(tmp_path)
    assert s.label_names == ["ant", "cat", "dog"]  # alphabetical, as torchvision's ImageFolder
    np.testing.assert_array_equal(s.images, np.stack(made["ant"] + made["cat"] + made["dog"]))
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.names[0] == str(tmp_path / "ant" / "0.png") and s.source == str(tmp_path)
    again = read_images(tmp_path, label_names=["dog", "cat", "ant", "eel"])  # given order; eel may be absent
    assert again.labels.tolist() == [2, 2, 1, 1, 0, 0] and again.num_labels == 4


def test_folder_modes_and_formats(tmp_path, capsys):
    a = pixels(1, c=3, seed=3)[0]
    save(tmp_path / "x" / "a.PNG", a)  # extension case does not matter
    Image.fromarray(a).convert("RGBA").save(tmp_path / "x" / "b.png")
    (tmp_path / "y").mkdir()
    Image.fromarray(a).save(tmp_path / "y" / "c.bmp")
    Image.fromarray(a).save(tmp_path / "y" / "d.jpg", quality=95)
    Image.fromarray(a).convert("P").save(tmp_path / "y" / "e.gif")
    s = read_images(tmp_path)
    assert s.channels == 3 and len(s) == 5
    for i in range(3):
        np.testing.assert_array_equal(s.images[i], a)
    with Image.open(tmp_path / "y" / "d.jpg") as j:
        np.testing.assert_array_equal(s.images[3], np.asarray(j.convert("RGB")))
    with Image.open(tmp_path / "y" / "e.gif") as g:
        np.testing.assert_array_equal(s.images[4], np.asarray(g.convert("RGB")))
    assert "converting" not in capsys.readouterr().err


def test_folder_mixed_gray_and_rgb_and_16_bit(tmp_path, capsys):
    g = pixels(1, seed=4)[0]
    rgb = pixels(1, c=3, seed=5)[0]
    save(tmp_path / "a" / "g.png", g)
    save(tmp_path / "b" / "rgb.png", rgb)
    s = read_images(tmp_path)
    assert s.channels == 3
    np.testing.assert_array_equal(s.images[0], np.repeat(g, 3, axis=2))
    np.testing.assert_array_equal(s.images[1], rgb)
    assert "1 grayscale and 1 colour images; converting all to RGB" in capsys.readouterr().err

    deep = tmp_path / "deep"
    v16 = np.arange(20, dtype=np.uint16).reshape(5, 4) * 3000
    save(deep / "k" / "d.png", v16[..., None])
    Image.fromarray(g[..., 0]).convert("LA").save(deep / "k" / "la.png")
    s = read_images(deep)
    assert s.channels == 1
    np.testing.assert_array_equal(s.images[0, ..., 0], (v16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(s.images[1], g)
    err = capsys.readouterr().err
    assert err.count("16-bit") == 1 and "1 16-bit grayscale image(s) scaled to 8 bits" in err


def test_folder_splits_and_aliases(tmp_path):
    tr = class_tree(tmp_path / "train", classes=("a", "b"))
    va = class_tree(tmp_path / "valid", per_class=1, classes=("a", "b"))
    te = class_tree(tmp_path / "test", per_class=3, classes=("b",))
    assert len(read_images(tmp_path)) == 4
    np.testing.assert_array_equal(read_images(tmp_path, "dev").images, np.stack(va["a"] + va["b"]))
    test = read_images(tmp_path, "test", label_names=["a", "b"])
    assert test.labels.tolist() == [1, 1, 1] and len(te["b"]) == 3 and len(tr["a"]) == 2
    with pytest.raises(UserError, match="holds split folders .*none for split 'extra'"):
        read_images(tmp_path, "extra")


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(UserError, match=r"'.*nowhere' does not exist"):
        read_images(tmp_path / "nowhere")
    with pytest.raises(UserError, match="found nothing to read under"):
        read_images(tmp_path)
    class_tree(tmp_path, classes=("a", "b"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"class folder '.*empty' holds no images.*Remove the folder, or add"):
        read_images(tmp_path)
    (tmp_path / "empty").rmdir()
    with pytest.raises(UserError, match=r"class folder '.*b' is not among the known classes \['a', 'z'\]"):
        read_images(tmp_path, label_names=["a", "z"])
    (tmp_path / "b" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot decode image '.*b/bad.png'.*corrupt, truncated"):
        read_images(tmp_path)
    save(tmp_path / "whole.png", pixels(1, 5, 4, seed=7)[0])
    good = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "b" / "bad.png").write_bytes(good[: len(good) // 2])  # header fine, pixel data cut short
    with pytest.raises(UserError, match=r"cannot decode image '.*b/bad.png'"):
        read_images(tmp_path)
    (tmp_path / "b" / "bad.png").unlink()
    flat = tmp_path / "flat"
    save(flat / "1.png", pixels(1)[0])
    with pytest.raises(UserError, match="no class sub-folders, so they have no labels"):
        read_images(flat)
    assert read_images(flat, require_labels=False).labels is None


def test_mixed_sizes_refused_then_resized(tmp_path):
    save(tmp_path / "a" / "small.png", pixels(1, 5, 4)[0])
    big = pixels(1, 8, 10, seed=1)[0]
    save(tmp_path / "b" / "big.png", big)
    with pytest.raises(UserError, match=r"'.*small.png' is 5x4 \(HxW\) but '.*big.png' is 8x10.*resize=\(H, W\)"):
        read_images(tmp_path)
    s = read_images(tmp_path, resize=(6, 6))
    assert s.images.shape == (2, 6, 6, 1)
    expected = Image.fromarray(big[..., 0]).resize((6, 6), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(s.images[1, ..., 0], np.asarray(expected))
    with pytest.raises(UserError, match="resize .*two positive whole numbers"):
        read_images(tmp_path, resize=(0, 3))


def test_arrays_resize_like_files(tmp_path):
    x = pixels(3, 8, 10, seed=2)
    np.savez(tmp_path / "d.npz", train_images=x[..., 0], train_labels=np.arange(3))
    for i in range(3):
        save(tmp_path / "tree" / "k" / f"{i}.png", x[i])
    from_npz = read_images(tmp_path / "d.npz", resize=4)
    from_pngs = read_images(tmp_path / "tree", resize=(4, 4))
    assert from_npz.size == (4, 4)
    np.testing.assert_array_equal(from_npz.images, from_pngs.images)


# ------------------------------------------------------------------------------------------------- CSV


def test_csv_round_trip_columns_and_lines(tmp_path):
    imgs = pixels(3, c=3, seed=6)
    for i, a in enumerate(imgs):
        save(tmp_path / "img" / f"{i}.png", a)
    (tmp_path / "train.csv").write_text("Image,Class\nimg/0.png,10\n\nimg/1.png,2\n" + f"{tmp_path}/img/2.png,2\n")
    s = read_images(tmp_path)  # a directory with train.csv; column names matched case-insensitively
    np.testing.assert_array_equal(s.images, imgs)
    assert s.label_names == ["2", "10"] and s.labels.tolist() == [1, 0, 0]  # sorted numerically
    assert s.lines == [2, 4, 5] and s.subset([2, 0]).lines == [5, 2]
    (tmp_path / "other.csv").write_text("a,b,c\nimg/1.png,x,z\nimg/0.png,y,z\n")
    t = read_images(tmp_path / "other.csv", path_col="a", label_col="b")
    assert t.label_names == ["x", "y"] and t.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(t.images, imgs[[1, 0]])
    unlabeled = read_images(tmp_path / "other.csv", path_col="a", require_labels=False)
    assert unlabeled.labels is None and len(unlabeled) == 2


def test_csv_bad_inputs(tmp_path):
    save(tmp_path / "0.png", pixels(1)[0])
    f = tmp_path / "d.csv"
    f.write_text("path,label\n0.png,a\nmissing.png,b\n")
    with pytest.raises(UserError, match=r"d.csv:3: image 'missing.png' not found"):
        read_images(f)
    f.write_text("path,label\n0.png,a\n0.png,zebra\n")
    with pytest.raises(UserError, match=r"d.csv:3: label 'zebra' is not among the known classes \['a', 'b'\]"):
        read_images(f, label_names=["a", "b"])
    f.write_text("file,what\n0.png,a\n")
    with pytest.raises(UserError, match=r"which column of '.*d.csv' holds the labels.*\(file, what\).*label_col"):
        read_images(f)
    with pytest.raises(UserError, match=r"'.*d.csv' has no column 'lab'. Columns: file, what"):
        read_images(f, label_col="lab")
    f.write_text("path,label\n0.png,a\n0.png\n")
    with pytest.raises(UserError, match=r"d.csv:3: expected 2 comma-separated fields"):
        read_images(f)
    f.write_text("path,label\n0.png,a\n0.png,\n")
    with pytest.raises(UserError, match=r"d.csv:3: empty label"):
        read_images(f)
    (tmp_path / "bad.png").write_bytes(b"junk")
    f.write_text("path,label\n0.png,a\nbad.png,a\n")
    with pytest.raises(UserError, match=r"cannot decode image '.*bad.png' \(listed at .*d.csv:3\)"):
        read_images(f)


# ------------------------------------------------------------------------------------------------- cache


def test_large_sets_decode_once_into_a_memmap_cache(tmp_path, monkeypatch):
    made = class_tree(tmp_path / "data", per_class=3, c=3)
    expected = np.stack(made["ant"] + made["cat"] + made["dog"])
    cache = tmp_path / "cache"
    monkeypatch.setattr(im_mod, "MEMMAP_BYTES", 16)
    first = read_images(tmp_path / "data", cache_dir=cache)
    assert isinstance(first.images, np.memmap)
    np.testing.assert_array_equal(first.images, expected)
    (final,) = list(cache.iterdir())
    assert final.suffix == ".npy"

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds these files")

    monkeypatch.setattr(im_mod, "_decode_file", no_decoding)
    second = read_images(tmp_path / "data", cache_dir=cache)
    np.testing.assert_array_equal(second.images, expected)
    assert second.labels.tolist() == first.labels.tolist()
    monkeypatch.undo()

    # A killed run leaves its half-written file under the temporary name: it must never pass for the cache.
    monkeypatch.setattr(im_mod, "MEMMAP_BYTES", 16)
    leftover = final.with_name(final.name + ".tmp-4242-deadbeef")
    os.replace(final, leftover)
    with open(leftover, "r+b") as fh:
        fh.truncate(leftover.stat().st_size // 2)
    calls = []
    real = im_mod._decode_file
    monkeypatch.setattr(im_mod, "_decode_file", lambda *a: calls.append(1) or real(*a))
    third = read_images(tmp_path / "data", cache_dir=cache)
    assert len(calls) == 9 and final.is_file()
    np.testing.assert_array_equal(third.images, expected)


def test_cache_follows_changed_files_and_env(tmp_path, monkeypatch):
    class_tree(tmp_path / "data", per_class=2)
    monkeypatch.setattr(im_mod, "MEMMAP_BYTES", 16)
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "env"))
    read_images(tmp_path / "data")
    assert len(list((tmp_path / "env" / "images").glob("*.npy"))) == 1
    new = pixels(1, seed=99)[0]
    save(tmp_path / "data" / "ant" / "0.png", new)
    os.utime(tmp_path / "data" / "ant" / "0.png", ns=(1, 1))  # a different mtime even on coarse clocks
    s = read_images(tmp_path / "data")
    np.testing.assert_array_equal(s.images[0], new)
    assert len(list((tmp_path / "env" / "images").glob("*.npy"))) == 2


def test_large_arrays_are_mapped_not_copied(tmp_path, monkeypatch):
    x, y = write_mnist(tmp_path, gz=False)
    monkeypatch.setattr(im_mod, "MEMMAP_BYTES", 16)
    s = read_images(tmp_path)  # an uncompressed idx file is mapped where it lies
    assert isinstance(s.images, np.memmap)
    np.testing.assert_array_equal(s.images[..., 0], x)
    r = read_images(tmp_path, resize=(3, 3), cache_dir=tmp_path / "cache")  # resized arrays go to the cache
    assert isinstance(r.images, np.memmap) and r.images.shape == (6, 3, 3, 1)
    expected = Image.fromarray(x[2]).resize((3, 3), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(r.images[2, ..., 0], np.asarray(expected))


def test_failed_decode_leaves_no_cache(tmp_path, monkeypatch):
    class_tree(tmp_path / "data", per_class=2)
    (tmp_path / "data" / "dog" / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.setattr(im_mod, "MEMMAP_BYTES", 16)
    with pytest.raises(UserError, match="z.png"):
        read_images(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else True


# ------------------------------------------------------------------------------------------------- ImageSet


def test_subset_is_in_memory_and_ordered(tmp_path, monkeypatch):
    class_tree(tmp_path / "data", per_class=2)
    monkeypatch.setattr(im_mod, "MEMMAP_BYTES", 16)
    s = read_images(tmp_path / "data", cache_dir=tmp_path / "cache")
    sub = s.subset(np.array([4, 1]))
    assert not isinstance(sub.images, np.memmap) and sub.images.flags.writeable
    np.testing.assert_array_equal(sub.images, s.images[[4, 1]])
    assert sub.labels.tolist() == [2, 0] and sub.names == [s.names[4], s.names[1]] and sub.lines == [5, 2]
    assert sub.label_names == s.label_names and len(s.subset(iter([0]))) == 1
    assert "6 images 5x4x1 memmap, 3 classes" in repr(s)


def test_from_arrays():
    x = pixels(4, c=3)
    s = ImageSet.from_arrays(x, [0, 2, 2, 1])
    assert s.images is x and s.label_names == ["0", "1", "2"] and s.names[1] == "<in-memory>[1]"
    gray = ImageSet.from_arrays(np.full((2, 3, 3), 0.5), label_names=["a"])
    assert gray.images.shape == (2, 3, 3, 1) and gray.images[0, 0, 0, 0] == 128 and gray.labels is None
    assert ImageSet.from_arrays(np.zeros((2, 3, 3, 1), dtype=np.int64), (1, 0)).labels.dtype == np.int64
    with pytest.raises(UserError, match=r"floats from 0 to 255.*must be in \[0, 1\]"):
        ImageSet.from_arrays(np.arange(18.0).reshape(2, 3, 3) * 15)
    with pytest.raises(UserError, match=r"floats from -1"):
        ImageSet.from_arrays(-np.ones((2, 3, 3)))
    with pytest.raises(UserError, match="NaN"):
        ImageSet.from_arrays(np.full((2, 3, 3), np.nan))
    with pytest.raises(UserError, match=r"shape \(2, 3\); images must be \(N, H, W\) or \(N, H, W, C\)"):
        ImageSet.from_arrays(np.zeros((2, 3)))
    with pytest.raises(UserError, match="channels-first"):
        ImageSet.from_arrays(np.zeros((2, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(UserError, match="4 images but 3 labels"):
        ImageSet.from_arrays(x, [0, 1, 1])
    with pytest.raises(UserError, match="label 2 is outside the 2 label names"):
        ImageSet.from_arrays(x, [0, 1, 2, 1], label_names=["a", "b"])
    with pytest.raises(UserError, match="whole-number class ids"):
        ImageSet.from_arrays(x, [0.5, 1, 1, 1])


def test_progress_bar_only_for_many_files(tmp_path, monkeypatch, capsys):
    class_tree(tmp_path, per_class=2)
    read_images(tmp_path)
    assert "decoding images" not in capsys.readouterr().err
    monkeypatch.setattr(im_mod, "PROGRESS_MIN_FILES", 3)
    read_images(tmp_path)
    assert "decoding images" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_mnist():
    d = SHARED_DATA / "mnist"
    if not d.is_dir():
        pytest.skip("shared MNIST not present")
    train = read_images(d)
    assert train.images.shape == (60000, 28, 28, 1) and train.label_names == [str(i) for i in range(10)]
    assert np.bincount(train.labels).tolist()[:2] == [5923, 6742]
    test = read_images(d, "test", label_names=train.label_names)
    assert test.images.shape == (10000, 28, 28, 1) and set(test.labels.tolist()) == set(range(10))


@pytest.mark.data
def test_real_pneumoniamnist():
    f = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"
    if not f.is_file():
        pytest.skip("shared PneumoniaMNIST not present")
    train = read_images(f)
    assert train.images.shape == (4708, 28, 28, 1) and np.bincount(train.labels).tolist() == [1214, 3494]
    assert len(read_images(f, "val")) == 524 and len(read_images(f, "test")) == 624
