"""Datasets: MNIST and CIFAR-10 as uint8 images and integer labels, with a fingerprint.

Sources, in order:
  1. a local data directory (argument `data_dir`, else the environment variable FORGING_TF_DATA):
     MNIST as the four standard IDX files (gzipped or not), in `DIR/mnist/` or `DIR/`;
     CIFAR-10 as `cifar10_jpeg.npz` (JPEG bytes, see shared/data/README.md) or the standard
     `cifar-10-batches-py` folder, in `DIR/cifar10/` or `DIR/`;
  2. tensorflow-datasets: a copy it has already prepared, else (if `download`) its download.

The model input is pixel / 255 as float32, correctly rounded (domain.PIXEL_VALUES); nothing else
is done to the data: no normalisation, no augmentation.

The fingerprint is a sha256 over the four arrays (x_train, y_train, x_test, y_test), each fed as
`name|dtype|shape|` followed by its C-order bytes, with x uint8 [n, h, w, c] and y int32 [n]. It is
taken after decoding, so it names the pixels the model saw, not the files they came from.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import pickle

import numpy as np

from forging_tf import errors
from forging_tf import results

DATA_DIR_ENV = "FORGING_TF_DATA"
CACHE_DIR_ENV = "FORGING_TF_CACHE"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  num_train: int
  num_test: int
  tfds_name: str


SPECS = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, 60_000, 10_000, "mnist"),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, 50_000, 10_000, "cifar10"),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset in memory.

  x_train: [n, h, w, c] uint8, y_train: [n] int32, x_test: [m, h, w, c] uint8, y_test: [m] int32.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  source: str
  fingerprint: str

  def as_dict(self) -> dict:
    """What a trace records about the data it was trained on."""
    return {
        "name": self.name,
        "split": "train",
        "num_examples": int(self.x_train.shape[0]),
        "image_shape": list(self.x_train.shape[1:]),
        "num_classes": self.num_classes,
        "fingerprint": self.fingerprint,
        "source": self.source,
    }


def fingerprint(x_train, y_train, x_test, y_test) -> str:
  digest = hashlib.sha256()
  for name, array in (
      ("x_train", x_train),
      ("y_train", y_train),
      ("x_test", x_test),
      ("y_test", y_test),
  ):
    contiguous = np.ascontiguousarray(array)
    digest.update(f"{name}|{contiguous.dtype.str}|{list(contiguous.shape)}|".encode())
    digest.update(contiguous.data)
  return digest.hexdigest()


def load_dataset(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
  """Loads `name` ('mnist' or 'cifar10') from the first source that has it (module docstring).

  Args:
    name: the dataset.
    data_dir: a local data directory (None: $FORGING_TF_DATA); tensorflow-datasets if it has no
      copy.
    download: let tensorflow-datasets download the dataset when it has no prepared copy.

  Returns:
    The dataset in memory, with its fingerprint and where it came from.

  Raises:
    DatasetError: unknown, not found in any source (the message says where it looked and what to
      do), or damaged.
  """
  if name not in SPECS:
    raise errors.DatasetError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
  spec = SPECS[name]
  data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
  looked_in = "no local data directory given"
  if data_dir:
    found = _LOCAL_LOADERS[name](os.path.abspath(os.path.expanduser(data_dir)))
    if found is not None:
      return _make_dataset(spec, *found)
    looked_in = f"not found in data directory {data_dir!r}"
  arrays, tfds_problem = _load_tfds(spec, download)
  if arrays is not None:
    return _make_dataset(spec, *arrays, source="tensorflow-datasets")
  raise errors.DatasetError(
      f"{name}: {looked_in} and tensorflow-datasets could not provide it ({tfds_problem}). "
      f"Either pass --data_dir or set {DATA_DIR_ENV} to a folder holding the {name} files "
      f"(see README, 'Data'), or run once with internet so tensorflow-datasets can download it."
  )


def check_described(dataset: Dataset, description: dict) -> None:
  """Raises DatasetError unless `dataset` is the data `description` (Dataset.as_dict(), as a
  trace records it) names: by fingerprint, then by the name and shapes the description states,
  which a model is built from."""
  if dataset.fingerprint != description["fingerprint"]:
    raise errors.DatasetError(
        f"{dataset.name} from {dataset.source} has fingerprint {dataset.fingerprint[:12]}..., "
        f"but the trace was trained on {description['fingerprint'][:12]}... (source "
        f"{description.get('source')!r}); point --data_dir at the data the trace was trained on"
    )
  actual = dataset.as_dict()
  for key in ("name", "num_examples", "image_shape", "num_classes"):
    if description.get(key) != actual[key]:
      raise errors.DatasetError(
          f"the trace describes {key} {description.get(key)!r:.60} of its "
          f"data, which are {actual[key]!r}; the trace was edited"
      )


def load_described(
    description: dict, data_dir: str | None = None, download: bool = True
) -> Dataset:
  """Loads the dataset a trace describes and checks it is the same data."""
  dataset = load_dataset(description["name"], data_dir, download)
  check_described(dataset, description)
  return dataset


def _make_dataset(spec: DatasetSpec, x_train, y_train, x_test, y_test, source: str) -> Dataset:
  x_train, x_test = (np.ascontiguousarray(x, dtype=np.uint8) for x in (x_train, x_test))
  y_train, y_test = (np.ascontiguousarray(y, dtype=np.int32).reshape(-1) for y in (y_train, y_test))
  x_train = x_train.reshape((-1,) + spec.image_shape)
  x_test = x_test.reshape((-1,) + spec.image_shape)
  expected = ((spec.num_train, spec.num_train), (spec.num_test, spec.num_test))
  got = ((x_train.shape[0], y_train.shape[0]), (x_test.shape[0], y_test.shape[0]))
  if got != expected:
    raise errors.DatasetError(
        f"{spec.name} from {source} has {got} (images, labels) in (train, test), expected "
        f"{expected}; the copy is incomplete: replace it"
    )
  for labels in (y_train, y_test):
    if labels.min() < 0 or labels.max() >= spec.num_classes:
      raise errors.DatasetError(
          f"{spec.name} from {source} has labels outside "
          f"0..{spec.num_classes - 1}; the copy is corrupt: replace it"
      )
  return Dataset(
      spec.name,
      x_train,
      y_train,
      x_test,
      y_test,
      spec.num_classes,
      source,
      fingerprint(x_train, y_train, x_test, y_test),
  )


# MNIST ---------------------------------------------------------------------------------------

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _load_local_mnist(data_dir: str):
  for folder in (os.path.join(data_dir, "mnist"), data_dir):
    paths = {}
    for key, stem in _MNIST_FILES.items():
      candidates = [os.path.join(folder, stem + ext) for ext in (".gz", "")]
      paths[key] = next((p for p in candidates if os.path.isfile(p)), None)
    if all(paths.values()):
      arrays = [read_idx(paths[key]) for key in _MNIST_FILES]
      return (*arrays, f"IDX files in {folder}")
  return None


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (gzipped or not): 2049 = labels [n], 2051 = images [n, rows, cols]."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise errors.DatasetError(f"cannot read {path} ({e}); replace the file") from e
  if len(raw) < 8:
    raise errors.DatasetError(f"{path} is too short to be an IDX file; replace it")
  magic = int.from_bytes(raw[:4], "big")
  ndim = {2049: 1, 2051: 3}.get(magic)
  if ndim is None:
    raise errors.DatasetError(
        f"{path}: IDX magic number {magic} is neither 2049 (labels) nor "
        "2051 (images); replace the file"
    )
  header = 4 + 4 * ndim
  dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
  if len(raw) != header + int(np.prod(dims)):
    raise errors.DatasetError(
        f"{path}: {len(raw) - header} data bytes for dimensions {dims}; "
        "the file is truncated or corrupt: replace it"
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# CIFAR-10 ------------------------------------------------------------------------------------


def _load_local_cifar10(data_dir: str):
  for folder in (os.path.join(data_dir, "cifar10"), data_dir):
    npz = os.path.join(folder, "cifar10_jpeg.npz")
    if os.path.isfile(npz):
      return (*decode_cifar10_jpeg_npz(npz), f"JPEG npz {npz} decoded with {_jpeg_decoder()}")
    batches = os.path.join(folder, "cifar-10-batches-py")
    if os.path.isdir(batches):
      return (*read_cifar10_batches_py(batches), f"cifar-10-batches-py in {folder}")
  return None


def _jpeg_decoder() -> str:
  import PIL
  from PIL import features

  return f"Pillow {PIL.__version__} / libjpeg-turbo {features.version('libjpeg_turbo')}"


def _cache_dir() -> str:
  return os.environ.get(CACHE_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "forging_tf"
  )


def decode_cifar10_jpeg_npz(path: str):
  """Decodes the JPEG npz (shared/data/README.md) with Pillow; returns x_train, y_train, x, y.

  Decoders differ by +-1 on some pixels (libjpeg-turbo vs tf.io.decode_jpeg), so there is one
  decoder: Pillow, `Image.open(...).convert("RGB")`. The decoded arrays are cached under
  FORGING_TF_CACHE (default ~/.cache/forging_tf), keyed by the npz's sha256 and the decoder
  version, because the data directory may be read-only and decoding 60,000 JPEGs takes seconds.
  """
  with open(path, "rb") as f:
    npz_digest = hashlib.file_digest(f, "sha256").hexdigest()
  decoder_key = hashlib.sha256(_jpeg_decoder().encode()).hexdigest()[:12]
  cache = os.path.join(_cache_dir(), f"cifar10_jpeg-{npz_digest[:16]}-{decoder_key}.npz")
  if os.path.isfile(cache):
    try:
      with np.load(cache, allow_pickle=False) as z:
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    except (OSError, ValueError, KeyError, EOFError):
      pass  # A damaged cache is rebuilt below.
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = []
      for split in ("train", "test"):
        arrays.append(_decode_jpegs(z[f"{split}_jpeg"], z[f"{split}_offsets"], path))
        arrays.append(np.asarray(z[f"y_{split}"]))
  except (OSError, ValueError, KeyError, EOFError) as e:
    raise errors.DatasetError(f"cannot read CIFAR-10 npz {path} ({e}); replace the file") from e
  try:
    results.write_npz(
        cache, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3]
    )
  except OSError:
    pass  # No writable cache: decode again next time.
  return tuple(arrays)


def _decode_jpegs(buffer: np.ndarray, offsets: np.ndarray, path: str) -> np.ndarray:
  from PIL import Image

  offsets = np.asarray(offsets, dtype=np.int64)
  if (
      offsets.ndim != 1
      or offsets[0] != 0
      or offsets[-1] != buffer.size
      or np.any(np.diff(offsets) <= 0)
  ):
    raise errors.DatasetError(f"{path}: JPEG offsets do not index the byte buffer; replace it")
  images = np.empty((offsets.size - 1, 32, 32, 3), dtype=np.uint8)
  for i in range(offsets.size - 1):
    try:
      image = Image.open(io.BytesIO(buffer[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
      images[i] = np.asarray(image)
    except (OSError, ValueError) as e:
      raise errors.DatasetError(
          f"{path}: JPEG {i} does not decode to 32x32 RGB ({e}); replace the file"
      ) from e
  return images


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles the CIFAR-10 python batches and nothing else: only numpy array reconstruction."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy", "ndarray"),
      ("numpy", "dtype"),
  }

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def read_cifar10_batches_py(folder: str):
  """Reads the standard `cifar-10-batches-py` folder; returns x_train, y_train, x_test, y_test."""
  splits = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
  arrays = []
  for names in splits.values():
    xs, ys = [], []
    for name in names:
      path = os.path.join(folder, name)
      try:
        with open(path, "rb") as f:
          batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[b"labels"]))
      except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise errors.DatasetError(f"cannot read CIFAR-10 batch {path} ({e}); replace it") from e
    arrays += [np.concatenate(xs), np.concatenate(ys)]
  return tuple(arrays)


_LOCAL_LOADERS = {"mnist": _load_local_mnist, "cifar10": _load_local_cifar10}


# tensorflow-datasets -------------------------------------------------------------------------


def _load_tfds(spec: DatasetSpec, download: bool):
  """Returns ((x_train, y_train, x_test, y_test), None) or (None, why not)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return None, "tensorflow-datasets is not installed"
  builder = tfds.builder(spec.tfds_name)
  if not builder.is_prepared():
    if not download:
      return None, f"no prepared copy in {builder.data_dir} and downloading is off"
    try:
      builder.download_and_prepare()
    except Exception as e:  # tfds raises many types (network, checksum, disk); all mean "no".
      return None, f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
  train, test = tfds.as_numpy(
      builder.as_dataset(split=["train", "test"], batch_size=-1, as_supervised=True)
  )
  return (train[0], train[1], test[0], test[1]), None
