"""scenarios.datasets.local: torchvision datasets read from a local folder.

Every fixture is written in the dataset's real on-disk format (idx-ubyte,
CIFAR pickles, SVHN .mat, USPS bz2 libsvm text, Omniglot PNG folders), a few
samples each, and read back through torchvision's own classes.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from scenarios.datasets import TensorClassificationDataset, omniglot_local, torchvision_local
from scenarios.datasets.local import ChecksumError, expected_files, split_per_class
from scenarios.streams import class_incremental

torch.set_num_threads(1)


# ------------------------------------------------------------------ fixtures in the real formats
def _write_idx(path, arr: np.ndarray) -> None:
    """IDX (LeCun) file: magic 0x0000 08 <ndim>, big-endian dims, uint8 payload."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(header + arr.tobytes())


def make_mnist(root, folder="MNIST", n_train=8, n_test=4, n_classes=4, gz=False):
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % n_classes).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            path = raw / f"{split}-{kind}-ubyte"
            _write_idx(path, arr)
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
        out[split] = (x, y)
    return out


def make_cifar10(root):
    rng = np.random.default_rng(1)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = [(2 * i) % 10, (2 * i + 1) % 10]
        entry = {"batch_label": f"batch {i}", "labels": labels, "data": data, "filenames": ["a.png", "b.png"]}
        (base / name).write_bytes(pickle.dumps(entry))
        batches[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_cases_per_batch": 2}))
    return batches


def make_cifar100(root):
    rng = np.random.default_rng(2)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = {}
    for name, n in (("train", 6), ("test", 3)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [v // 5 for v in fine]
        entry = {"data": data, "fine_labels": fine, "coarse_labels": coarse, "filenames": ["f"] * n}
        (base / name).write_bytes(pickle.dumps(entry))
        out[name] = (data, fine)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (base / "meta").write_bytes(pickle.dumps(meta))
    return out


def make_svhn(root):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, labels in (("train", [10, 1, 2, 3, 10, 1]), ("test", [2, 3, 10, 1])):
        n = len(labels)
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # SVHN stores (H, W, C, N)
        y = np.asarray(labels, dtype=np.uint8).reshape(n, 1)         # digit 0 has label 10
        savemat(str(root / f"{name}_32x32.mat"), {"X": X, "y": y})
        out[name] = (X, np.asarray(labels))
    return out


_USPS_VALUES = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
_USPS_PIXELS = np.array([0, 63, 127, 191, 255], dtype=np.uint8)  # (v + 1) / 2 * 255, truncated


def make_usps(root):
    rng = np.random.default_rng(4)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for fname, labels in (("usps.bz2", [1, 2, 3, 4, 1, 2]), ("usps.t.bz2", [3, 4, 1, 2])):
        codes = rng.integers(0, 5, size=(len(labels), 256))
        lines = []
        for label, row in zip(labels, codes):
            lines.append(f"{label} " + " ".join(f"{j + 1}:{_USPS_VALUES[c]:.6f}" for j, c in enumerate(row)))
        (root / fname).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
        out[fname] = (_USPS_PIXELS[codes].reshape(-1, 16, 16), np.asarray(labels) - 1)
    return out


def make_omniglot(root, target="images_background", size=12, zip_only=False):
    """<root>/omniglot-py/<target>/<alphabet>/<character>/*.png, 1-bit PNGs like the originals."""
    folder = root / "omniglot-py"
    chars = [("Alphabet_B", "character02"), ("Alphabet_A", "character01"), ("Alphabet_B", "character01")]
    rng = np.random.default_rng(5)
    images = {}
    for alphabet, character in chars:
        d = folder / target / alphabet / character
        d.mkdir(parents=True)
        for k in range(4):
            bits = rng.integers(0, 2, size=(size, size)).astype(bool)
            Image.fromarray(bits).convert("1").save(d / f"{character}_{k:02d}.png")
            images[f"{alphabet}/{character}/{character}_{k:02d}.png"] = bits
    if zip_only:
        with zipfile.ZipFile(folder / f"{target}.zip", "w") as z:
            for p in sorted((folder / target).rglob("*")):
                z.write(p, p.relative_to(folder))
        shutil.rmtree(folder / target)
    return images


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ MNIST family
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("KMNIST", "KMNIST")])
def test_mnist_family_reads_idx_files(tmp_path, name, folder):
    arrays = make_mnist(tmp_path, folder)
    for train, split in ((True, "train"), (False, "t10k")):
        ds = torchvision_local(name, tmp_path, train=train)
        x, y = arrays[split]
        assert type(ds).__name__ == folder  # torchvision's own class
        assert len(ds) == len(x)
        img, label = ds[1]
        assert img.shape == (1, 28, 28) and img.dtype == torch.float32
        assert torch.equal(img[0], torch.from_numpy(x[1]).float() / 255)  # ToTensor by default
        assert label == int(y[1])
        assert torch.as_tensor(ds.targets).tolist() == y.tolist()


def test_mnist_gz_archives_are_unpacked_offline_and_checked(tmp_path):
    arrays = make_mnist(tmp_path, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    # verify=True: the fixture's .gz are not the published ones, so the md5 check names the archive
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.gz"):
        torchvision_local("mnist", tmp_path)
    ds = torchvision_local("mnist", tmp_path, verify=False)
    assert (raw / "train-images-idx3-ubyte").is_file() and (raw / "t10k-labels-idx1-ubyte").is_file()
    assert torch.equal(ds.data, torch.from_numpy(arrays["train"][0]))


def test_download_true_with_files_present_reads_them_without_network(tmp_path):
    arrays = make_mnist(tmp_path)
    ds = torchvision_local("mnist", tmp_path, train=False, download=True)  # torchvision skips the download
    assert ds.targets.tolist() == arrays["t10k"][1].tolist()


def test_download_only_when_asked(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.usps as tv_usps

    calls = []

    def fake_download_url(url, root, filename, md5=None):  # stands in for the network
        calls.append(filename)
        make_usps(tmp_path / "fetched")
        shutil.copy(tmp_path / "fetched" / filename, tmp_path / "data" / filename)

    monkeypatch.setattr(tv_usps, "download_url", fake_download_url)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match="usps.t.bz2"):
        torchvision_local("usps", tmp_path / "data", train=False)  # download=False: never fetches
    assert calls == []
    ds = torchvision_local("usps", tmp_path / "data", train=False, download=True, verify=False)
    assert calls == ["usps.t.bz2"] and len(ds) == 4

    def offline(url, root, filename, md5=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_usps, "download_url", offline)
    with pytest.raises(RuntimeError, match=r"downloading USPS into .* failed .*copy the files"):
        torchvision_local("usps", tmp_path / "data", train=True, download=True)


# ------------------------------------------------------------------ CIFAR
def test_cifar10_reads_pickled_batches(tmp_path):
    batches = make_cifar10(tmp_path)
    train = torchvision_local("cifar-10", tmp_path, verify=False)
    test = torchvision_local("cifar10", tmp_path, train=False, verify=False)
    assert len(train) == 10 and len(test) == 2
    assert train.classes[:2] == ["airplane", "automobile"]
    data, labels = batches["data_batch_2"]                  # samples 2 and 3 of the train split
    img, label = train[3]
    assert img.shape == (3, 32, 32)
    expected = torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255  # R, G, B planes
    assert torch.equal(img, expected)
    assert label == labels[1] and train.targets[2:4] == labels
    assert test.targets == batches["test_batch"][1]


def test_cifar100_uses_fine_labels(tmp_path):
    out = make_cifar100(tmp_path)
    train = torchvision_local("CIFAR-100", tmp_path, verify=False)
    test = torchvision_local("cifar100", tmp_path, train=False, verify=False)
    assert train.targets == out["train"][1] and test.targets == out["test"][1]
    assert len(train.classes) == 100
    assert torch.equal(test[2][0], torch.from_numpy(out["test"][0][2].reshape(3, 32, 32)).float() / 255)


def test_cifar_md5_is_checked_by_default(tmp_path):
    make_cifar10(tmp_path)
    with pytest.raises(ChecksumError, match=r"cifar-10-batches-py/data_batch_1: md5 .*verify=False"):
        torchvision_local("cifar10", tmp_path)


def test_cifar_tar_gz_is_unpacked_offline(tmp_path):
    import tarfile

    src = tmp_path / "src"
    batches = make_cifar10(src)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    test = torchvision_local("cifar10", tmp_path, train=False, verify=False)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert test.targets == batches["test_batch"][1]


# ------------------------------------------------------------------ SVHN
def test_svhn_reads_mat_and_exposes_integer_targets(tmp_path):
    out = make_svhn(tmp_path)
    train = torchvision_local("svhn", tmp_path, verify=False)
    test = torchvision_local("svhn", tmp_path, train=False, verify=False)
    X, labels = out["train"]
    assert train.targets.dtype == torch.long
    assert train.targets.tolist() == [0, 1, 2, 3, 0, 1]  # label 10 is the digit 0
    assert test.targets.tolist() == [2, 3, 0, 1]
    img, label = train[4]
    assert img.shape == (3, 32, 32) and label == 0
    assert torch.equal(img, torch.from_numpy(X[:, :, :, 4]).permute(2, 0, 1).float() / 255)


def test_svhn_md5_is_checked_by_default(tmp_path):
    make_svhn(tmp_path)
    with pytest.raises(ChecksumError, match="test_32x32.mat"):
        torchvision_local("svhn", tmp_path, train=False)


# ------------------------------------------------------------------ USPS
def test_usps_reads_bz2_libsvm_lines(tmp_path):
    out = make_usps(tmp_path)
    train = torchvision_local("usps", tmp_path, verify=False)
    test = torchvision_local("usps", tmp_path, train=False, verify=False)
    pixels, labels = out["usps.bz2"]
    assert train.targets == labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert test.targets == out["usps.t.bz2"][1].tolist()
    img, _ = train[5]
    assert img.shape == (1, 16, 16)
    # values -1, -0.5, 0, 0.5, 1 become pixels 0, 63, 127, 191, 255 (torchvision's (v + 1) / 2 * 255)
    assert torch.equal(img[0], torch.from_numpy(pixels[5]).float() / 255)


def test_usps_md5_checked_against_torchvision_sums(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    out = make_usps(tmp_path)
    with pytest.raises(ChecksumError, match="usps.bz2"):
        torchvision_local("usps", tmp_path)  # torchvision itself would read it unchecked
    table = {k: [url, f, _md5(tmp_path / f)] for k, (url, f, _) in tvd.USPS.split_list.items()}
    monkeypatch.setattr(tvd.USPS, "split_list", table)
    ds = torchvision_local("usps", tmp_path, train=False)  # sums match: verify=True passes
    assert ds.targets == out["usps.t.bz2"][1].tolist()


# ------------------------------------------------------------------ Omniglot
def test_omniglot_reads_png_folders_with_character_targets(tmp_path):
    images = make_omniglot(tmp_path)
    ds = torchvision_local("omniglot", tmp_path, verify=False)
    # characters numbered over the sorted alphabet/character folders
    assert ds.characters == ["Alphabet_A/character01", "Alphabet_B/character01", "Alphabet_B/character02"]
    assert ds.targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for i in (0, 5, 11):
        img, label = ds[i]
        assert label == int(ds.targets[i])
        name, _ = ds._flat_character_images[i]
        bits = images[f"{ds.characters[label]}/{name}"]
        assert img.shape == (1, 12, 12)
        assert torch.equal(img[0], torch.from_numpy(bits).float())  # 1-bit PNG -> 0.0 / 1.0
    same = omniglot_local(tmp_path, background=True, verify=False)
    assert same.targets.tolist() == ds.targets.tolist()
    with pytest.raises(FileNotFoundError, match="images_evaluation"):
        omniglot_local(tmp_path, background=False, verify=False)


def test_omniglot_verify_needs_the_zip_and_says_so(tmp_path):
    make_omniglot(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"images_background\.zip(.|\n)*verify=False"):
        torchvision_local("omniglot", tmp_path)


def test_omniglot_zip_is_unpacked_and_md5_checked(tmp_path):
    images = make_omniglot(tmp_path, zip_only=True)
    with pytest.raises(ChecksumError, match="images_background.zip"):
        torchvision_local("omniglot", tmp_path)
    ds = torchvision_local("omniglot", tmp_path, verify=False)
    assert (tmp_path / "omniglot-py" / "images_background" / "Alphabet_A").is_dir()
    assert len(ds) == len(images) == 12


def test_split_per_class_gives_every_character_to_both_sides(tmp_path):
    make_omniglot(tmp_path)
    ds = omniglot_local(tmp_path, verify=False)
    train, test = split_per_class(ds, test_fraction=0.25, seed=0)
    assert sorted(train.targets.tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    assert sorted(test.targets.tolist()) == [0, 1, 2]
    assert set(train.indices).isdisjoint(test.indices)
    assert all(test[i][1] == int(test.targets[i]) for i in range(len(test)))
    bm = class_incremental((train, test), n_experiences=3, seed=0)
    assert [len(e.dataset) for e in bm.train_stream] == [3, 3, 3]
    assert bm.input_shape == (1, 12, 12)


# ------------------------------------------------------------------ missing files
@pytest.mark.parametrize("name", ["mnist", "fashionmnist", "kmnist", "cifar10", "cifar100", "svhn", "usps", "omniglot"])
def test_missing_folder_raises_file_not_found_naming_the_path(tmp_path, name):
    root = tmp_path / "nowhere"
    expected = expected_files(name, root)
    with pytest.raises(FileNotFoundError) as info:
        torchvision_local(name, root)
    msg = str(info.value)
    assert str(expected[0]) in msg
    assert "does not exist" in msg and "download=True" in msg and "torchvision's layout" in msg


def test_partly_missing_names_only_the_missing_files(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as info:
        torchvision_local("mnist", tmp_path)  # torchvision needs both splits' files
    missing = info.value.missing
    assert [p.name for p in missing] == ["t10k-labels-idx1-ubyte"]
    assert "train-images" not in str(info.value).split("missing:")[1].split(".\n")[0]


# ------------------------------------------------------------------ streams and tensors
def test_class_incremental_on_local_mnist(tmp_path):
    make_mnist(tmp_path, n_train=8, n_test=4, n_classes=4)
    pair = (torchvision_local("mnist", tmp_path), torchvision_local("mnist", tmp_path, train=False))
    bm = class_incremental(pair, n_experiences=2, class_order=[3, 1, 0, 2])
    assert bm.n_classes == 4 and bm.input_shape == (1, 28, 28)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream] == [[1, 3], [0, 2]]
    assert [len(e.dataset) for e in bm.train_stream] == [4, 4]
    assert [len(e.dataset) for e in bm.test_stream] == [2, 2]
    x, y, t = bm.train_stream[1].dataset[0]
    assert x.shape == (1, 28, 28) and y in (0, 2) and t == 0


def test_naive_trains_on_a_torchvision_backed_stream(tmp_path):
    from strategies.base import Naive

    make_svhn(tmp_path)
    pair = tuple(torchvision_local("svhn", tmp_path, train=t, verify=False) for t in (True, False))
    bm = class_incremental(pair, n_experiences=2, seed=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    before = model[1].weight.detach().clone()
    strat = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=4,
                  progress=False)
    for exp in bm.train_stream:
        strat.train(exp)
    res = strat.eval(bm.test_stream)
    assert not torch.equal(before, model[1].weight.detach())
    assert any(k.startswith("Top1_Acc_Stream") for k in res)


@pytest.mark.parametrize("name,make", [("mnist", make_mnist), ("cifar10", make_cifar10), ("svhn", make_svhn),
                                       ("usps", make_usps), ("omniglot", make_omniglot)])
def test_as_tensors_equals_the_dataset_items(tmp_path, name, make):
    make(tmp_path)
    ds = torchvision_local(name, tmp_path, verify=False)
    t = torchvision_local(name, tmp_path, verify=False, as_tensors=True)
    assert isinstance(t, TensorClassificationDataset) and len(t) == len(ds)
    assert torch.equal(t.x, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert t.y.tolist() == [ds[i][1] for i in range(len(ds))]


def test_custom_transform_is_used(tmp_path):
    make_usps(tmp_path)
    t = torchvision_local("usps", tmp_path, verify=False, as_tensors=True,
                          transform=lambda im: torch.from_numpy(np.asarray(im)).float().unsqueeze(0) * 2)
    plain = torchvision_local("usps", tmp_path, verify=False, as_tensors=True)
    assert torch.equal(t.x, plain.x * 255 * 2)
    with pytest.raises(TypeError, match="as_tensors=True needs a transform that returns tensors"):
        torchvision_local("usps", tmp_path, verify=False, as_tensors=True, transform=lambda im: im)


def test_split_torchvision_scenario_from_the_registry(tmp_path):
    from scenarios.registry import SCENARIOS

    make_mnist(tmp_path, n_classes=4)
    bm = SCENARIOS.build(f"split-torchvision:dataset=mnist,root={tmp_path},n_experiences=2,verify=false", seed=1)
    assert bm.n_experiences == 2 and bm.n_classes == 4
    assert sum(len(e.dataset) for e in bm.train_stream) == 8


# ------------------------------------------------------------------ bad arguments
def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        torchvision_local("imagenet", tmp_path)
    with pytest.raises(TypeError, match="name must be a string"):
        torchvision_local(3, tmp_path)
    with pytest.raises(TypeError, match="root must be a path"):
        torchvision_local("mnist", 3)
    with pytest.raises(ValueError, match="root must name a folder"):
        torchvision_local("mnist", "")
    for arg in ("train", "download", "verify", "as_tensors"):
        with pytest.raises(TypeError, match=f"{arg} must be True or False"):
            torchvision_local("mnist", tmp_path, **{arg: "yes"})
    with pytest.raises(TypeError, match="transform must be callable"):
        torchvision_local("mnist", tmp_path, transform=5)
    with pytest.raises(TypeError, match="background must be True or False"):
        omniglot_local(tmp_path, background="yes")
    ds = TensorClassificationDataset(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="test_fraction must be in"):
        split_per_class(ds, test_fraction=1.5)
    with pytest.raises(TypeError, match="seed must be an integer"):
        split_per_class(ds, seed="0")
