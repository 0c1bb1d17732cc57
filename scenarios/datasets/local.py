"""torchvision datasets read from a local folder, offline by default.

:func:`torchvision_local` opens MNIST, FashionMNIST, KMNIST, CIFAR-10,
CIFAR-100, SVHN, USPS and Omniglot with torchvision's own dataset classes, from
files laid out as torchvision lays them out. Nothing is downloaded unless
``download=True``. What it adds to torchvision:

* a missing file is a ``FileNotFoundError`` that names every path expected and
  says how to get the data (instead of torchvision's "Dataset not found");
* md5 checking stays on by default (torchvision's own sums) and can be turned
  off with ``verify=False`` (for copies that differ from the originals, or
  test fixtures); a mismatch is a :class:`ChecksumError` naming the file;
* an archive that is present but not unpacked (``train-images-idx3-ubyte.gz``,
  ``cifar-10-python.tar.gz``, ``images_background.zip``) is unpacked in place,
  offline;
* every dataset has integer ``targets`` (SVHN's ``labels``; Omniglot's
  character index), so :func:`scenarios.streams.class_incremental` works on it;
* images come as float tensors (``ToTensor``) unless another transform is
  given, and ``as_tensors=True`` materialises the whole split as a
  :class:`~scenarios.datasets.TensorClassificationDataset` (KTA's fast data
  path, and :func:`~scenarios.streams.domain_incremental`).

Layouts (``root`` is the folder you pass)::

    MNIST / FashionMNIST / KMNIST   <root>/<Name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    CIFAR-10                        <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
                                    (or <root>/cifar-10-python.tar.gz)
    CIFAR-100                       <root>/cifar-100-python/{train,test,meta}   (or <root>/cifar-100-python.tar.gz)
    SVHN                            <root>/{train,test}_32x32.mat
    USPS                            <root>/usps.bz2, <root>/usps.t.bz2
    Omniglot                        <root>/omniglot-py/images_{background,evaluation}/<alphabet>/<character>/*.png
                                    (+ images_{background,evaluation}.zip when verify=True)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ._tensor import TensorClassificationDataset

__all__ = [
    "ChecksumError", "LOCAL_DATASETS", "torchvision_local", "omniglot_local", "expected_files", "split_per_class",
    "train_test_pair",
]

#: Canonical names of the datasets :func:`torchvision_local` reads (torchvision class names).
LOCAL_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN", "USPS", "Omniglot")
_MNIST_FAMILY = ("MNIST", "FashionMNIST", "KMNIST")


class ChecksumError(RuntimeError):
    """A dataset file whose md5 differs from the one torchvision expects."""


def _canonical(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {list(LOCAL_DATASETS)}, got {type(name).__name__}")
    key = "".join(c for c in name.lower() if c.isalnum())
    aliases = {n.lower(): n for n in LOCAL_DATASETS}
    if key not in aliases:
        raise ValueError(f"name must be one of {list(LOCAL_DATASETS)} (case, '-' and '_' ignored), got {name!r}")
    return aliases[key]


def _tv_class(canonical: str):
    import torchvision.datasets as tvd

    return getattr(tvd, canonical)


# ------------------------------------------------------------------ expected layout
@dataclass
class _Spec:
    """Where one split of a dataset lives on disk, and how torchvision checks it."""

    name: str
    root: Path
    train: bool
    files: list = field(default_factory=list)     # [(path, md5 or None)] torchvision needs
    dirs: list = field(default_factory=list)      # [path] folders torchvision lists
    archives: list = field(default_factory=list)  # [(archive, md5 or None, extract_to, [paths it provides])]
    layout: str = ""                              # human-readable layout for error messages
    hint: str = ""                                # extra advice when something is missing

    @property
    def split(self) -> str:
        if self.name == "Omniglot":
            return "background" if self.train else "evaluation"
        return "train" if self.train else "test"


def _spec(canonical: str, root: Path, train: bool) -> _Spec:
    cls = _tv_class(canonical)
    s = _Spec(canonical, root, train)
    if canonical in _MNIST_FAMILY:
        raw = root / canonical / "raw"
        for gz_name, gz_md5 in cls.resources:
            path = raw / os.path.splitext(gz_name)[0]
            # torchvision keeps md5 sums for the .gz archives only; the unpacked files are checked for existence.
            s.files.append((path, None))
            s.archives.append((raw / gz_name, gz_md5, raw, [path]))
        s.layout = f"{raw}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte (or the same names with .gz)"
    elif canonical in ("CIFAR10", "CIFAR100"):
        base = root / cls.base_folder
        s.files = [(base / f, md5) for f, md5 in cls.train_list + cls.test_list]
        s.files.append((base / cls.meta["filename"], cls.meta["md5"]))
        s.archives.append((root / cls.filename, cls.tgz_md5, root, [p for p, _ in s.files]))
        names = ",".join(f for f, _ in cls.train_list + cls.test_list) + "," + cls.meta["filename"]
        s.layout = f"{base}/{{{names}}} (or the archive {root / cls.filename})"
    elif canonical == "SVHN":
        _, filename, md5 = cls.split_list["train" if train else "test"]
        s.files = [(root / filename, md5)]
        s.layout = f"{root}/train_32x32.mat and {root}/test_32x32.mat"
    elif canonical == "USPS":
        _, filename, md5 = cls.split_list["train" if train else "test"]
        # torchvision reads USPS without checking it; KTA checks torchvision's md5 when verify=True.
        s.files = [(root / filename, md5)]
        s.layout = f"{root}/usps.bz2 and {root}/usps.t.bz2"
    elif canonical == "Omniglot":
        folder = root / cls.folder
        target = "images_background" if train else "images_evaluation"
        zip_path = folder / f"{target}.zip"
        s.dirs = [folder / target]
        s.files = [(zip_path, cls.zips_md5[target])]  # dropped when verify=False
        s.archives.append((zip_path, cls.zips_md5[target], folder, [folder / target]))
        s.layout = f"{folder / target}/<alphabet>/<character>/*.png and {zip_path}"
        s.hint = (
            f"torchvision verifies Omniglot through the md5 of {zip_path.name}: keep the zip next to the "
            f"unpacked folder, or pass verify=False to read the unpacked folder alone"
        )
    return s


def expected_files(name: str, root: Union[str, os.PathLike], train: bool = True, verify: bool = True) -> list[Path]:
    """The files (and, for Omniglot, the folder) :func:`torchvision_local` needs for one split.

    Example:
        >>> [p.name for p in expected_files("svhn", "/data", train=False)]
        ['test_32x32.mat']
    """
    s = _spec(_canonical(name), Path(root).expanduser(), bool(train))
    files = s.files if (verify or s.name != "Omniglot") else []
    return [p for p, _ in files] + list(s.dirs)


def _md5_ok(path: Path, md5: Optional[str]) -> None:
    from torchvision.datasets.utils import calculate_md5

    if md5 is None:
        return
    actual = calculate_md5(path)
    if actual != md5:
        raise ChecksumError(
            f"{path}: md5 {actual} differs from torchvision's {md5}; the file is damaged or not the original. "
            f"Get a fresh copy (download=True on a machine with internet access), or pass verify=False "
            f"to read it unchecked"
        )


def _missing_error(s: _Spec, missing: list[Path], download_name: str) -> FileNotFoundError:
    root_note = "" if s.root.is_dir() else f" (the folder {s.root} does not exist)"
    lines = [
        f"{s.name} ({s.split} split) not found under {s.root}{root_note}; missing: "
        + ", ".join(str(p) for p in missing) + ".",
        "To get the data: call torchvision_local("
        f"{download_name!r}, {str(s.root)!r}, download=True) on a machine with internet access "
        f"(then copy the folder here), or copy the files into that folder in torchvision's layout:",
        f"    {s.layout}",
    ]
    if s.hint:
        lines.append(s.hint + ".")
    err = FileNotFoundError("\n".join(lines))
    err.missing = list(missing)
    return err


def _prepare(s: _Spec, verify: bool, download_name: str) -> None:
    """Make the split readable offline: unpack archives, check presence, then md5 sums."""
    from torchvision.datasets.utils import extract_archive

    files = s.files if (verify or s.name != "Omniglot") else []  # Omniglot unverified: the folder alone
    for archive, md5, dest, provides in s.archives:
        if any(not p.exists() for p in provides) and archive.is_file():
            if verify:
                _md5_ok(archive, md5)
            extract_archive(str(archive), str(dest))
    missing = [p for p, _ in files if not p.is_file()] + [d for d in s.dirs if not d.is_dir()]
    if missing:
        raise _missing_error(s, missing, download_name)
    if verify:
        for path, md5 in files:
            _md5_ok(path, md5)


# ------------------------------------------------------------------ torchvision classes without md5 checks
_UNVERIFIED: dict[str, type] = {}


def _unverified(canonical: str):
    """torchvision's class with its md5 sums removed (presence is still checked)."""
    if canonical in _UNVERIFIED:
        return _UNVERIFIED[canonical]
    base = _tv_class(canonical)
    if canonical in ("CIFAR10", "CIFAR100"):
        attrs = {
            "train_list": [[f, None] for f, _ in base.train_list],
            "test_list": [[f, None] for f, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        }
    elif canonical == "SVHN":
        attrs = {"split_list": {k: [url, f, None] for k, (url, f, _) in base.split_list.items()}}
    elif canonical == "Omniglot":
        def _check_integrity(self) -> bool:
            return os.path.isdir(os.path.join(self.root, self._get_target_folder()))

        attrs = {"_check_integrity": _check_integrity}
    else:  # MNIST family and USPS: torchvision checks no md5 when reading
        return base
    attrs["__doc__"] = f"torchvision's {canonical} without md5 checks (``verify=False``)."
    attrs["__module__"] = __name__
    cls = type(f"{canonical}Unverified", (base,), attrs)
    _UNVERIFIED[canonical] = cls
    return cls


def _sort_omniglot(ds) -> None:
    """Number Omniglot's characters in sorted ``alphabet/character`` order, images sorted by name.

    torchvision lists the folders in ``os.listdir`` order, which differs from
    one file system to another; sorting makes class indices the same everywhere.
    """
    by_char = {ds._characters[idx]: sorted(img for img, _ in images) for idx, images in enumerate(ds._character_images)}
    ds._alphabets = sorted(ds._alphabets)
    ds._characters = sorted(by_char)
    ds._character_images = [[(img, idx) for img in by_char[c]] for idx, c in enumerate(ds._characters)]
    ds._flat_character_images = [pair for images in ds._character_images for pair in images]


def _construct(canonical: str, root: Path, train: bool, transform, download: bool, verify: bool):
    cls = _tv_class(canonical) if verify else _unverified(canonical)
    if canonical == "SVHN":
        ds = cls(str(root), split="train" if train else "test", transform=transform, download=download)
        ds.targets = torch.as_tensor(np.asarray(ds.labels), dtype=torch.long)
    elif canonical == "Omniglot":
        ds = cls(str(root), background=train, transform=transform, download=download)
        _sort_omniglot(ds)
        ds.targets = torch.tensor([c for _, c in ds._flat_character_images], dtype=torch.long)
        ds.characters = list(ds._characters)  # "alphabet/character" of each class index
    else:
        ds = cls(str(root), train=train, transform=transform, download=download)
    return ds


def _fast_tensors(canonical: str, ds) -> Optional[TensorClassificationDataset]:
    """What ``ToTensor`` would give for every sample, straight from the decoded uint8 arrays."""
    if canonical == "Omniglot":
        return None  # images are read from files one by one
    data = torch.as_tensor(np.asarray(ds.data))
    if canonical in ("CIFAR10", "CIFAR100"):
        data = data.permute(0, 3, 1, 2)  # stored HWC
    elif canonical != "SVHN":  # SVHN is stored CHW; MNIST family and USPS are (N, H, W)
        data = data.unsqueeze(1)
    x = data.contiguous().to(torch.get_default_dtype()).div(255)
    return TensorClassificationDataset(x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long))


def _to_tensors(ds: Dataset, what: str) -> TensorClassificationDataset:
    if len(ds) == 0:
        raise ValueError(f"{what} is empty; as_tensors=True needs at least one sample")
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"as_tensors=True needs a transform that returns tensors; {what}[{i}] is {type(x).__name__}"
            )
        xs.append(x)
        ys.append(int(y))
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"as_tensors=True needs images of one shape; {what} has {sorted(shapes)} (add a Resize)")
    return TensorClassificationDataset(torch.stack(xs), torch.tensor(ys, dtype=torch.long))


def _check_bool(argname: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname} must be True or False, got {value!r}")
    return bool(value)


def torchvision_local(
    name: str,
    root: Union[str, os.PathLike],
    train: bool = True,
    download: bool = False,
    transform: Optional[Callable] = None,
    *,
    verify: bool = True,
    as_tensors: bool = False,
):
    """One split of a torchvision dataset, read from the local folder ``root``.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``, ``"cifar10"``,
            ``"cifar100"``, ``"svhn"``, ``"usps"`` or ``"omniglot"`` (case, ``-``
            and ``_`` ignored; torchvision's class names work too).
        root: the folder holding the files in torchvision's layout (see the
            module docstring, or :func:`expected_files`).
        train: the training split (default) or the test split. For Omniglot:
            the *background* set (``True``) or the *evaluation* set
            (``False``); their characters are disjoint (a few-shot split, not a
            train/test split of the same classes; see :func:`split_per_class`).
        download: ``False`` (default): read only what is on disk; a missing
            file raises ``FileNotFoundError`` naming it. ``True``: let
            torchvision download what is missing into ``root`` (needs internet).
        transform: applied to each PIL image; ``None`` (default) means
            ``torchvision.transforms.ToTensor()``: float tensors ``(C, H, W)``
            in ``[0, 1]``.
        verify: check torchvision's md5 sums (default ``True``): the CIFAR
            batches, the SVHN ``.mat``, the USPS ``.bz2`` (torchvision itself
            does not check these when reading; KTA does), the Omniglot zip, and
            any archive unpacked on the way (MNIST-family ``.gz``, CIFAR
            ``.tar.gz``). The unpacked MNIST-family files have no published md5
            and are only checked for presence. ``False`` skips every md5 check:
            for re-encoded copies and for test fixtures.
        as_tensors: return a :class:`~scenarios.datasets.TensorClassificationDataset`
            holding the whole split in memory (transform applied once), which
            KTA strategies batch by indexing; default ``False`` returns the
            torchvision dataset itself.

    Returns:
        the torchvision dataset (with integer ``targets``; SVHN and Omniglot
        get one), or a :class:`TensorClassificationDataset` with ``as_tensors``.

    Raises:
        FileNotFoundError: a file is missing; the message names every missing
            path, the expected layout and how to get the data.
        ChecksumError: (a ``RuntimeError``) a file's md5 is not torchvision's.

    Example:
        >>> from scenarios.datasets import torchvision_local
        >>> from scenarios.streams import class_incremental
        >>> train = torchvision_local("mnist", "~/data")
        >>> test = torchvision_local("mnist", "~/data", train=False)
        >>> bm = class_incremental((train, test), n_experiences=5)
    """
    canonical = _canonical(name)
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
    if str(root) == "":
        raise ValueError("root must name a folder, got an empty string")
    train = _check_bool("train", train)
    download = _check_bool("download", download)
    verify = _check_bool("verify", verify)
    as_tensors = _check_bool("as_tensors", as_tensors)
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
    default_transform = transform is None
    if default_transform:
        from torchvision.transforms import ToTensor

        transform = ToTensor()
    root = Path(root).expanduser()

    spec = _spec(canonical, root, train)
    if download:
        try:
            ds = _construct(canonical, root, train, transform, download=True, verify=verify)
        except (OSError, RuntimeError) as e:  # URLError, socket errors, torchvision's "Error downloading"
            raise RuntimeError(
                f"downloading {canonical} into {root} failed ({e}); without internet access, copy the files "
                f"into that folder in torchvision's layout: {spec.layout}"
            ) from e
        if verify and canonical == "USPS":
            for path, md5 in spec.files:
                _md5_ok(path, md5)
    else:
        _prepare(spec, verify, name)
        ds = _construct(canonical, root, train, transform, download=False, verify=verify)
    if as_tensors:
        fast = _fast_tensors(canonical, ds) if default_transform else None
        return fast if fast is not None else _to_tensors(ds, f"{canonical} ({spec.split})")
    return ds


def omniglot_local(
    root: Union[str, os.PathLike],
    background: bool = True,
    download: bool = False,
    transform: Optional[Callable] = None,
    *,
    verify: bool = True,
    as_tensors: bool = False,
):
    """Omniglot's background (964 characters, 30 alphabets) or evaluation set (659, 20 alphabets).

    Reads ``<root>/omniglot-py/images_background`` (``background=True``) or
    ``images_evaluation``; ``targets`` is the character class index (classes
    numbered over the sorted ``alphabet/character`` folders, listed in
    ``dataset.characters``). The two sets have no character in common: train on
    one, meta-test on the other, or use :func:`split_per_class` to split one
    set's images of every character into train and test. Other arguments as in
    :func:`torchvision_local`.

    Example:
        >>> background = omniglot_local("~/data")
        >>> train, test = split_per_class(background, test_fraction=0.25, seed=0)
    """
    background = _check_bool("background", background)
    return torchvision_local(
        "omniglot", root, train=background, download=download, transform=transform,
        verify=verify, as_tensors=as_tensors,
    )


class _LabelledSubset(Subset):
    """A ``Subset`` that keeps integer ``targets`` (so Avalanche and the stream builders read them)."""

    def __init__(self, dataset, indices, targets: torch.Tensor):
        super().__init__(dataset, list(map(int, indices)))
        self.targets = targets


def split_per_class(dataset, test_fraction: float = 0.25, seed: int = 0):
    """Split every class of ``dataset`` into train and test samples (stratified, seeded).

    For datasets that come as one set of classes (an Omniglot set, whose two
    sets have different characters). Returns ``(train, test)``, subsets with
    integer ``targets``; a class with ``n`` samples gives ``round(n *
    test_fraction)`` of them to the test side.

    Example:
        >>> train, test = split_per_class(omniglot_local("~/data"), test_fraction=0.25)
        >>> bm = class_incremental((train, test), n_experiences=4)
    """
    from .embedded import stratified_split as _stratified_split

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    t = getattr(dataset, "targets", None)
    if t is None:
        raise ValueError(f"dataset {type(dataset).__name__} has no `targets` attribute (integer class labels)")
    y = torch.as_tensor(np.asarray(t), dtype=torch.long)
    tr, te = _stratified_split(y.numpy(), float(test_fraction), int(seed))
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves one side empty on {len(y)} samples")
    return _LabelledSubset(dataset, tr, y[tr]), _LabelledSubset(dataset, te, y[te])


def train_test_pair(dataset: str = "mnist", root: str = "", verify: bool = True, download: bool = False,
                    seed: int = 0):
    """``(train, test)`` of a local torchvision dataset, ready for a stream: the two splits as tensors, or, for
    Omniglot, its background set split per character (:func:`split_per_class`, a quarter to test).
    ``root`` defaults to ``<cache_dir>/torchvision``. Used by the ``split-torchvision`` scenario."""
    from .embedded import cache_dir

    folder = root or str(cache_dir() / "torchvision")
    if _canonical(dataset) == "Omniglot":
        full = torchvision_local(dataset, folder, True, download, verify=verify)
        return split_per_class(full, test_fraction=0.25, seed=seed)
    return tuple(
        torchvision_local(dataset, folder, train, download, verify=verify, as_tensors=True)
        for train in (True, False)
    )
