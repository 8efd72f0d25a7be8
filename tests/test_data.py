import gzip
import hashlib
import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from PIL import features

from forging_tf import data
from forging_tf import errors

# Published sha256 of the official uncompressed IDX files, and the decoded CIFAR-10 arrays with
# Pillow 13.0.0 / libjpeg-turbo 3.2.0 (shared/data/README.md).
_MNIST_IDX_SHA256 = {
    "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_CIFAR_DECODED_SHA256 = {
    "x_train": "bf3aabd52be912dae02a0435296c4dab5289524b57f55cd162dc4796935a611b",
    "x_test": "5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f",
}


def test_mnist_is_the_official_data(mnist, data_dir):
  assert mnist.x_train.shape == (60_000, 28, 28, 1) and mnist.x_train.dtype == np.uint8
  assert mnist.x_test.shape == (10_000, 28, 28, 1) and mnist.y_train.dtype == np.int32
  assert np.bincount(mnist.y_train).tolist() == [
      5923,
      6742,
      5958,
      6131,
      5842,
      5421,
      5918,
      6265,
      5851,
      5949,
  ]
  assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  for key, stem in data._MNIST_FILES.items():
    with gzip.open(os.path.join(data_dir, "mnist", stem + ".gz"), "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == _MNIST_IDX_SHA256[key]
  assert mnist.fingerprint == data.fingerprint(
      mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test
  )
  assert mnist.as_dict()["fingerprint"] == mnist.fingerprint and "IDX" in mnist.source


def test_cifar10_decodes_with_pillow_and_is_cached(cifar10, data_dir):
  assert cifar10.x_train.shape == (50_000, 32, 32, 3) and cifar10.x_test.shape == (
      10_000,
      32,
      32,
      3,
  )
  assert np.bincount(cifar10.y_train).tolist() == [5000] * 10
  assert "Pillow" in cifar10.source
  if (Image.__version__, features.version("libjpeg_turbo")) == ("13.0.0", "3.2.0"):
    for key, digest in _CIFAR_DECODED_SHA256.items():
      assert hashlib.sha256(getattr(cifar10, key).tobytes()).hexdigest() == digest
  cached = os.listdir(os.environ[data.CACHE_DIR_ENV])
  assert len([name for name in cached if name.startswith("cifar10_jpeg-")]) == 1
  again = data.load_dataset("cifar10", data_dir, download=False)
  assert again.fingerprint == cifar10.fingerprint


def test_jpeg_npz_decoding_on_small_arrays(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  blobs = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  path = tmp_path / "cifar10_jpeg.npz"
  np.savez(
      path,
      train_jpeg=np.concatenate(blobs),
      train_offsets=offsets,
      y_train=[1, 2, 3],
      test_jpeg=blobs[0],
      test_offsets=[0, len(blobs[0])],
      y_test=[4],
  )
  x_train, y_train, x_test, y_test = data.decode_cifar10_jpeg_npz(str(path))
  assert x_train.shape == (3, 32, 32, 3) and y_train.tolist() == [1, 2, 3]
  for blob, decoded in zip(blobs, x_train):  # exactly what the documented decoder gives
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(blob.tobytes()))))
  np.testing.assert_array_equal(x_test[0], x_train[0])


def _write_batch(path, images_hwc, labels):
  rows = images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1)
  with open(path, "wb") as f:
    pickle.dump({b"data": rows, b"labels": list(labels)}, f)


def test_cifar10_batches_py_folder(tmp_path):
  rng = np.random.default_rng(1)
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
  for i in range(5):
    _write_batch(folder / f"data_batch_{i + 1}", images[i : i + 1], [i])
  _write_batch(folder / "test_batch", images[5:], [9])
  x_train, y_train, x_test, y_test = data.read_cifar10_batches_py(str(folder))
  np.testing.assert_array_equal(x_train, images[:5])
  np.testing.assert_array_equal(x_test, images[5:])
  assert y_train.tolist() == [0, 1, 2, 3, 4] and y_test.tolist() == [9]


class _Exploit:

  def __reduce__(self):
    return (os.system, ("touch /tmp/forging_tf_pwned",))


def test_cifar10_batches_never_run_code(tmp_path):
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  with open(folder / "data_batch_1", "wb") as f:
    pickle.dump({b"data": _Exploit(), b"labels": [0]}, f)
  with pytest.raises(errors.DatasetError, match="not allowed"):
    data.read_cifar10_batches_py(str(folder))
  assert not os.path.exists("/tmp/forging_tf_pwned")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:-10], "truncated"),
        (lambda raw: b"\x00\x00\x09\x99" + raw[4:], "magic number"),
        (lambda raw: raw[:5], "too short"),
    ],
)
def test_damaged_idx_files_are_clear_errors(tmp_path, damage, message):
  header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 3, 3))
  raw = header + bytes(range(18))
  intact = tmp_path / "intact-idx3-ubyte"
  intact.write_bytes(raw)
  assert data.read_idx(str(intact)).shape == (2, 3, 3)
  path = tmp_path / "images-idx3-ubyte.gz"
  with gzip.open(path, "wb") as f:
    f.write(damage(raw))
  with pytest.raises(errors.DatasetError, match=message):
    data.read_idx(str(path))


def test_missing_dataset_names_both_ways(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  with pytest.raises(errors.DatasetError) as e:
    data.load_dataset("mnist", str(tmp_path), download=False)
  message = str(e.value)
  assert "--data_dir" in message and data.DATA_DIR_ENV in message
  assert "tensorflow-datasets" in message and "\n" not in message


def test_unknown_dataset():
  with pytest.raises(errors.DatasetError, match="unknown dataset 'svhn'"):
    data.load_dataset("svhn")
